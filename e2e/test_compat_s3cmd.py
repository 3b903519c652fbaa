"""Compatibility: s3cmd (from e2e/requirements.txt) manages buckets and files on Hamster.

Proves, with s3cmd configured as for any S3-compatible host (path style: host_bucket without
`%(bucket)s`, SigV4, 15 MiB multipart chunks), that a user can make and list a bucket, put a
small file and a 50 MiB file that s3cmd uploads in 15 MiB parts
(the object gets the multipart ETag of those four parts), see both listed with their sizes,
read the size with `info`, get both back byte-identical, resume a partial download with
`get --continue` (a ranged GET from the local size on) into the exact file, sync a tree with
awkward names up and back down identically, copy server-side, delete one object, delete
everything with `del --recursive --force` (DeleteObjects), remove the bucket and see it gone.

How: s3cmd runs as a subprocess with a config file of its own (`-c`), nothing from the user's
home. One `hamster serve` on loopback per module (`shared_node`); the test's bucket is removed
even on failure.
"""

from __future__ import annotations

import re
import uuid

import pytest

import compat_data as cd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3cmd(shared_node, tmp_path_factory):
    exe = cd.find_program("s3cmd", "pip install -r e2e/requirements.txt", venv=True)
    home = tmp_path_factory.mktemp("s3cmdcfg")
    cfg = home / "s3cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = {shared_node.access_key}\n"
        f"secret_key = {shared_node.secret_key}\n"
        f"host_base = {shared_node.s3_addr}\n"
        f"host_bucket = {shared_node.s3_addr}\n"
        "bucket_location = us-east-1\n"
        "use_https = False\n"
        "signature_v2 = False\n"
        "multipart_chunk_size_mb = 15\n"
        "check_ssl_certificate = False\n"
        "progress_meter = False\n"
    )
    env = cd.clean_env({"HOME": str(home)})
    return cd.Client("s3cmd", [exe, "-c", str(cfg)], env)


@pytest.fixture
def bucket_name(shared_node):
    name = f"compat-s3cmd-{uuid.uuid4().hex[:12]}"
    yield name
    cd.drop_bucket(shared_node, name)


def listed(out: str) -> dict[str, int]:
    # `s3cmd ls [--recursive] s3://b/` prints "DATE TIME SIZE s3://b/KEY" per object
    # ("DIR s3://b/prefix/" for prefixes, skipped here).
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\S+\s+\S+\s+(\d+)\s+(s3://.+)$", line)
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def buckets(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines() if "s3://" in line]


def test_s3cmd_workflow(s3cmd, shared_node, bucket_name, tmp_path):
    b = bucket_name
    u = f"s3://{b}"
    small = cd.make_small(tmp_path / "small.txt")
    big = cd.make_big(tmp_path / "big.bin")
    tree = cd.make_tree(tmp_path / "tree")

    s3cmd("mb", "mb", u)
    assert u in buckets(s3cmd("ls", "ls").stdout)

    s3cmd("put small", "put", str(small), f"{u}/small.txt")
    s3cmd("put 50 MiB (multipart, 15 MiB parts)", "put", str(big), f"{u}/big.bin")
    assert listed(s3cmd("ls bucket", "ls", f"{u}/").stdout) == {
        f"{u}/small.txt": small.stat().st_size, f"{u}/big.bin": cd.BIG_BYTES}

    # Four parts of at most 15 MiB: the object carries the multipart ETag of exactly those.
    assert cd.etag_of(shared_node, b, "big.bin") == cd.multipart_etag(big, 15 * cd.MIB)
    info = s3cmd("info big", "info", f"{u}/big.bin").stdout
    print(info)
    assert re.search(rf"File size:\s*{cd.BIG_BYTES}\b", info), info
    # s3cmd shows the whole file's MD5, which it keeps in the object's metadata for multipart.
    assert re.search(rf"MD5 sum:\s*{cd.md5_file(big)}\b", info), info

    for name, src in (("small.txt", small), ("big.bin", big)):
        dst = tmp_path / f"down-{name}"
        s3cmd(f"get {name}", "get", f"{u}/{name}", str(dst))
        assert cd.sha256_file(dst) == cd.sha256_file(src), f"{name} came back different"

    # A partial local file plus --continue: s3cmd asks for Range: bytes=<local size>- .
    partial = tmp_path / "partial.bin"
    with open(big, "rb") as f:
        partial.write_bytes(f.read(cd.MIB + 13))
    s3cmd("get --continue", "get", "--continue", f"{u}/big.bin", str(partial))
    assert partial.stat().st_size == cd.BIG_BYTES
    assert cd.sha256_file(partial) == cd.sha256_file(big)

    s3cmd("sync tree up", "sync", f"{tree}/", f"{u}/tree/")
    remote = listed(s3cmd("ls --recursive tree", "ls", "--recursive", f"{u}/tree/").stdout)
    assert sorted(k[len(f"{u}/tree/"):] for k in remote) == sorted(cd.tree_digest(tree))
    down = tmp_path / "tree-down"
    down.mkdir()
    s3cmd("sync tree down", "sync", f"{u}/tree/", f"{down}/")
    cd.assert_same_tree(tree, down)

    s3cmd("server-side cp", "cp", f"{u}/small.txt", f"{u}/copy of small.txt")
    copy_back = tmp_path / "copy.down"
    s3cmd("get copy", "get", f"{u}/copy of small.txt", str(copy_back))
    assert copy_back.read_bytes() == small.read_bytes()

    s3cmd("del", "del", f"{u}/small.txt")
    top = listed(s3cmd("ls after del", "ls", f"{u}/").stdout)
    assert f"{u}/small.txt" not in top and f"{u}/copy of small.txt" in top

    s3cmd("del --recursive --force", "del", "--recursive", "--force", f"{u}/")
    assert listed(s3cmd("ls after del --recursive", "ls", "--recursive", f"{u}/").stdout) == {}
    s3cmd("rb", "rb", u)
    assert u not in buckets(s3cmd("ls after rb", "ls").stdout)
