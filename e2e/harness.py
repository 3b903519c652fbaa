"""Process and client helpers shared by the end-to-end tests.

A `Node` is one real `hamster serve` process on 127.0.0.1 with ephemeral ports and its own data
directory. Every process started here is remembered by PID and stopped by PID (SIGTERM, then
SIGKILL after a timeout), including at interpreter exit, so a failing test never leaves a server
behind.
"""

from __future__ import annotations

import atexit
import configparser
import hashlib
import os
import random
import signal
import socket
import string
import subprocess
import time
from pathlib import Path

import boto3
import requests
from botocore.config import Config

REPO_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"

# A debug build initialises a cluster (certificates, LMDB, first election) before it is ready.
READY_TIMEOUT = float(os.environ.get("HAMSTER_E2E_READY_TIMEOUT", "60"))
# The contract: SIGTERM/SIGINT end the process cleanly within a few seconds.
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 60.0

# pid -> Popen of every server this process started and has not yet reaped.
_LIVE: dict[int, subprocess.Popen] = {}


def hamster_bin() -> str:
    path = os.environ.get("HAMSTER_BIN") or str(REPO_ROOT / "target" / "debug" / "hamster")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"hamster binary not found at {path}; build it (cargo build) or set HAMSTER_BIN"
        )
    return path


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                 timeout: float = STOP_TIMEOUT) -> tuple[int, bool]:
    """Stop one process by PID: `sig`, then SIGKILL if it is still there after `timeout`.

    Returns (exit status as Popen reports it, whether SIGKILL was needed).
    """
    needed_kill = False
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            needed_kill = True
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(STOP_TIMEOUT)
    _LIVE.pop(proc.pid, None)
    return proc.returncode, needed_kill


def stop_all_live() -> None:
    for proc in list(_LIVE.values()):
        stop_process(proc, signal.SIGTERM, 5.0)


atexit.register(stop_all_live)


def free_ports(n: int) -> list[int]:
    """n distinct currently-free TCP ports on 127.0.0.1 (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours without AWS_* / HAMSTER_* leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("HAMSTER_")}
    env["RUST_BACKTRACE"] = "1"
    if extra:
        env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a short-lived `hamster` verb; subprocess.run kills it if it overruns `timeout`."""
    return subprocess.run([hamster_bin(), *args], capture_output=True, text=True,
                          timeout=timeout, env=child_env(env), stdin=subprocess.DEVNULL)


def random_key_pair() -> tuple[str, str]:
    rnd = random.SystemRandom()
    ak = "HAMSTERE2E" + "".join(rnd.choice(string.ascii_uppercase + string.digits)
                                for _ in range(10))
    sk = "".join(rnd.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
    return ak, sk


def read_credentials(data_dir: Path) -> tuple[str, str]:
    cp = configparser.ConfigParser()
    text = (data_dir / "credentials").read_text()
    cp.read_string(text)
    return (cp["default"]["aws_access_key_id"].strip(),
            cp["default"]["aws_secret_access_key"].strip())


def s3_client(endpoint: str, access_key: str, secret_key: str, **config: object):
    """A boto3 S3 client for a local endpoint: path style, no retries, bounded timeouts."""
    settings: dict = dict(
        region_name=REGION,
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
    )
    settings.update(config)
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(**settings),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def error_code(exc) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def http_status(exc) -> int:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output file)"
    return "\n".join(text.splitlines()[-lines:])


# Nodes that tests can still be reporting about (see conftest's failure report hook).
ACTIVE_NODES: list["Node"] = []


class Node:
    """One `hamster serve` process on loopback ephemeral ports."""

    def __init__(self, data_dir: Path, log_dir: Path, name: str = "node",
                 access_key: str | None = None, secret_key: str | None = None,
                 no_s3: bool = False, token: str | None = None,
                 extra_args: list[str] | None = None):
        self.name = name
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key
        self.secret_key = secret_key
        self.no_s3 = no_s3
        # A join token passed as `--token` on every start (the node ignores it once joined).
        self.token = token
        # Further `serve` flags, on every start.
        self.extra_args = list(extra_args or [])
        self.s3_port, self.admin_port, self.cluster_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.logs: list[tuple[Path, Path]] = []
        ACTIVE_NODES.append(self)

    # -- addresses --------------------------------------------------------------------------
    @property
    def s3_addr(self) -> str:
        return f"127.0.0.1:{self.s3_port}"

    @property
    def admin_addr(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def cluster_addr(self) -> str:
        return f"127.0.0.1:{self.cluster_port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.s3_addr}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_addr}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- process control ----------------------------------------------------------------------
    def _spawn(self) -> None:
        self.starts += 1
        out = self.log_dir / f"{self.name}-{self.starts}.stdout"
        err = self.log_dir / f"{self.name}-{self.starts}.stderr"
        self.logs.append((out, err))
        args = [hamster_bin(), "serve", "--data", str(self.data_dir),
                "--admin", self.admin_addr, "--cluster-addr", self.cluster_addr]
        args += ["--no-s3"] if self.no_s3 else ["--s3", self.s3_addr]
        if self.token:
            args += ["--token", self.token]
        args += self.extra_args
        extra = {}
        if self.access_key and self.secret_key:
            extra = {"HAMSTER_ACCESS_KEY": self.access_key,
                     "HAMSTER_SECRET_KEY": self.secret_key}
        with open(out, "wb") as fo, open(err, "wb") as fe:
            self.proc = subprocess.Popen(args, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                         env=child_env(extra))
        _LIVE[self.proc.pid] = self.proc

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> "Node":
        """Start the node; by default wait until /ready answers 200."""
        first = self.starts == 0
        for attempt in range(3):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready(timeout)
                break
            except NodeExited:
                # Another process may have taken one of our ports between picking and binding.
                if first and attempt < 2 and "in use" in self.stderr().lower():
                    self.s3_port, self.admin_port, self.cluster_port = free_ports(3)
                    continue
                raise
        if self.access_key is None or self.secret_key is None:
            try:
                self.access_key, self.secret_key = read_credentials(self.data_dir)
            except (FileNotFoundError, KeyError, configparser.Error):
                pass
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT, path: str = "/ready") -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise NodeExited(f"{self.name} exited with {code} before {path} answered 200:\n"
                                 f"{self.stderr_tail()}")
            try:
                r = requests.get(self.admin_url + path, timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}: {r.text[:200]}"
            except requests.RequestException as e:
                last = type(e).__name__
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready within {timeout}s (last: {last}):\n"
                           f"{self.stderr_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> tuple[int, bool]:
        if self.proc is None:
            return 0, False
        return stop_process(self.proc, sig, timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)
        _LIVE.pop(self.proc.pid, None)

    def restart(self) -> "Node":
        self.stop()
        return self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- outputs ----------------------------------------------------------------------------
    def stdout(self, start: int = 1) -> str:
        return self.logs[start - 1][0].read_text(errors="replace")

    def stderr(self, start: int | None = None) -> str:
        if not self.logs:
            return ""
        idx = (start - 1) if start else -1
        return self.logs[idx][1].read_text(errors="replace")

    def stderr_tail(self, lines: int = 40) -> str:
        if not self.logs:
            return "(never started)"
        return tail(self.logs[-1][1], lines)

    def report(self) -> str:
        parts = [f"== {self.name}: data {self.data_dir}, s3 {self.s3_addr}, admin "
                 f"{self.admin_addr}, cluster {self.cluster_addr}, starts {self.starts}"]
        for out, err in self.logs[-2:]:
            parts.append(f"-- {out.name} (tail)\n{tail(out, 15)}")
            parts.append(f"-- {err.name} (tail)\n{tail(err, 40)}")
        return "\n".join(parts)

    # -- clients ------------------------------------------------------------------------------
    def client(self, access_key: str | None = None, secret_key: str | None = None, **config):
        return s3_client(self.endpoint, access_key or self.access_key,
                         secret_key or self.secret_key, **config)

    def metrics_text(self) -> str:
        r = requests.get(self.admin_url + "/metrics", timeout=10)
        r.raise_for_status()
        return r.text


class NodeExited(RuntimeError):
    pass


def shard_files(data_dir: Path) -> list[Path]:
    """Finished shard files under DIR/shards (writes in progress end in `.tmp`)."""
    root = Path(data_dir) / "shards"
    if not root.exists():
        return []
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")]


def tmp_shard_files(data_dir: Path) -> list[Path]:
    """Shard writes in progress (or left by a crash): `<shard>.<seq>.tmp` beside the shards."""
    root = Path(data_dir) / "shards"
    if not root.exists():
        return []
    return [p for p in root.rglob("*.tmp") if p.is_file()]


def list_all_keys(client, bucket: str) -> list[dict]:
    """Every object of a bucket via ListObjectsV2 pagination."""
    out: list[dict] = []
    kwargs = {"Bucket": bucket}
    for _ in range(100000):
        page = client.list_objects_v2(**kwargs)
        out.extend(page.get("Contents", []))
        if not page.get("IsTruncated"):
            return out
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    raise AssertionError("listing never ended")


def empty_and_delete_bucket(client, bucket: str) -> None:
    for obj in list_all_keys(client, bucket):
        client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)
