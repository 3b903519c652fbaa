"""Shared pieces of the real-client compatibility suite (e2e/test_compat_*.py).

- The data every client moves: a small file, a 50 MiB file (large enough that each client splits
  it into parts) and a directory tree whose names are the ones that break naive clients and
  servers: spaces, `+`, `=`, `%`, UTF-8 in Latin and Cyrillic, a zero-byte file, nested
  directories. All bytes come from os.urandom into the test's tmp dir.
- Finding a client program, and what happens when it is missing: the test FAILS in CI
  (CI=true), where the machine is supposed to have it, and SKIPS with the reason elsewhere.
- Running a client as a subprocess with a bounded time; a failure names the step and carries
  the command, the exit status and the tails of its stdout/stderr.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

import harness

MIB = 1024 * 1024
BIG_BYTES = 50 * MIB
# A Range a user would ask for: bytes 1000-1099 inclusive.
RANGE_FIRST, RANGE_LAST = 1000, 1099

# Relative path -> size in bytes (None: a fixed text). Names chosen to hit URL encoding,
# form-encoding ('+' as space), SigV4 canonical-URI encoding and UTF-8 handling.
TREE_FILES: dict[str, int | None] = {
    "top.txt": None,
    "a/f1.bin": 937,
    "a/f2.bin": 2 * 937,
    "a/f3.bin": 3 * 937,
    "a/b/300k.bin": 300_000,
    "a/b/c/deep1.txt": None,
    "a/b/c/deep2.txt": None,
    "a/ünïcødé-файл.txt": None,
    "dir with space/file+plus=eq.txt": None,
    "dir with space/100%.txt": None,
    "dir with space/a b  c.txt": None,
    "empty-ish/zero-bytes": 0,
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_client(name: str, how: str) -> None:
    """A client the suite needs is not installed: fail in CI, skip elsewhere, saying how."""
    msg = f"{name} is not installed ({how})"
    if in_ci():
        pytest.fail(f"{msg}; CI must provide it (.ci/run installs it)", pytrace=False)
    pytest.skip(msg)


def find_program(name: str, how: str, venv: bool = False) -> str:
    """The path of a client program: beside our Python for venv tools, else on PATH."""
    if venv:
        beside = Path(sys.executable).parent / name
        if beside.exists():
            return str(beside)
    found = shutil.which(name)
    if not found:
        missing_client(name, how)
    return found  # type: ignore[return-value]


# -- data -----------------------------------------------------------------------------------------

def write_random(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 4 * MIB)
            f.write(os.urandom(n))
            left -= n
    return path


def make_small(path: Path) -> Path:
    return write_random(path, 1024 + 17)


def make_big(path: Path) -> Path:
    return write_random(path, BIG_BYTES)


def make_tree(root: Path) -> Path:
    """The tree every client syncs; see TREE_FILES.

    The files are dated a minute back, as a user's files are: sync tools compare a local mtime
    with the object's whole-second LastModified, so a file written in the same second as its
    upload could legitimately look newer than its copy (with any S3 server).
    """
    past = time.time() - 60
    for rel, size in TREE_FILES.items():
        p = root / rel
        if size is None:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{rel}\n{os.urandom(8).hex()}\n", encoding="utf-8")
        else:
            write_random(p, size)
        os.utime(p, (past, past))
    return root


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MIB), b""):
            h.update(chunk)
    return h.hexdigest()


def read_range(path: Path, first: int, last: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(first)
        return f.read(last - first + 1)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path (with '/') -> sha256 of every regular file under root."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def assert_same_tree(expected_root: Path, got_root: Path) -> None:
    want, got = tree_digest(expected_root), tree_digest(got_root)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    assert not (missing or extra or differ), (
        f"trees differ: {expected_root} vs {got_root}\n"
        f"missing: {missing}\nunexpected: {extra}\ndifferent bytes: {differ}")


def multipart_etag(path: Path, part_bytes: int) -> str:
    """The ETag S3 gives an object uploaded in parts of part_bytes: md5 of the part md5s, -N."""
    digests = []
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(part_bytes), b""):
            digests.append(hashlib.md5(chunk).digest())
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def etag_of(node, bucket: str, key: str) -> str:
    """The ETag of an object as any S3 client sees it (HEAD through boto3)."""
    return node.client().head_object(Bucket=bucket, Key=key)["ETag"]


def plain_get(url: str) -> requests.Response:
    """GET with no proxy, no credentials, no retries: what curl on a presigned URL does."""
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url, timeout=60)


# -- running clients ------------------------------------------------------------------------------

def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


class Client:
    """One client program with its environment; each call is one named step of a workflow."""

    def __init__(self, name: str, argv0: list[str], env: dict[str, str], cwd: Path | None = None,
                 timeout: float = 150):
        self.name = name
        self.argv0 = argv0
        self.env = env
        self.cwd = cwd
        self.timeout = timeout

    def __call__(self, step: str, *args: str, check: bool = True, timeout: float | None = None,
                 stdout_path: Path | None = None) -> subprocess.CompletedProcess:
        cmd = [*self.argv0, *args]
        started = time.monotonic()
        try:
            if stdout_path is not None:
                with open(stdout_path, "wb") as out:
                    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, env=self.env,
                                          cwd=self.cwd, timeout=timeout or self.timeout,
                                          stdin=subprocess.DEVNULL)
                proc.stdout = ""
                proc.stderr = proc.stderr.decode("utf-8", "replace")
            else:
                proc = subprocess.run(cmd, capture_output=True, env=self.env, cwd=self.cwd,
                                      timeout=timeout or self.timeout, stdin=subprocess.DEVNULL)
                proc.stdout = proc.stdout.decode("utf-8", "replace")
                proc.stderr = proc.stderr.decode("utf-8", "replace")
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"[{self.name}] step '{step}' timed out after {e.timeout}s: "
                                 f"{' '.join(cmd)}") from None
        took = time.monotonic() - started
        print(f"[{self.name}] {step}: exit {proc.returncode} in {took:.1f}s")
        # Warnings a client printed even when it succeeded, kept for the failure report.
        for line in proc.stderr.splitlines():
            if any(w in line for w in ("WARN", "ERROR", "NOTICE: Failed", "retry", "Retry")):
                print(f"    {line[:300]}")
        if check and proc.returncode != 0:
            raise AssertionError(
                f"[{self.name}] step '{step}' failed: exit {proc.returncode}\n"
                f"command: {' '.join(cmd)}\n"
                f"--- stdout (tail)\n{_tail(proc.stdout)}\n--- stderr (tail)\n{_tail(proc.stderr)}")
        return proc


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The harness's child environment (no AWS_*/HAMSTER_* leaking in, so no AWS_CA_BUNDLE,
    which breaks rclone with a custom endpoint), no proxies for loopback, plus `extra`."""
    env = harness.child_env()
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy") or k.startswith("RCLONE_") \
                or k.startswith("RESTIC_"):
            del env[k]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def drop_bucket(node, name: str) -> None:
    """Best-effort cleanup of a bucket a client test made, whatever state it was left in."""
    try:
        client = node.client()
    except Exception:
        return
    try:
        for up in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    except Exception:
        pass
    try:
        harness.empty_and_delete_bucket(client, name)
    except Exception:
        pass
