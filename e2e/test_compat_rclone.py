"""Compatibility: rclone (Debian's package) copies, checks and syncs against Hamster.

Proves, with rclone's S3 backend as a user configures it for a non-AWS provider (provider
Other, path style, SigV4), that a user can make a bucket, copy a small file, copy a 50 MiB file
that rclone uploads in 5 MiB parts (the object gets the multipart ETag of those ten parts), `check` it (sizes and MD5s agree: rclone takes the MD5 of
a multipart object from the metadata it stores with it), read 100 bytes at offset 1000 with
`cat`, copy it back byte-identical, sync a tree with awkward names and `check` it, sync again
after deleting, changing and adding local files and find the remote following exactly (the
deleted file gone), copy server-side, delete one file, delete everything, remove the bucket and
see it gone.

How: rclone runs as a subprocess configured only through RCLONE_CONFIG_* variables and an empty
config file of its own; AWS_* variables are kept out of its environment (AWS_CA_BUNDLE makes
rclone 1.60 fail every request to a custom endpoint). One `hamster serve` on loopback per module
(`shared_node`); the test's bucket is removed even on failure.
"""

from __future__ import annotations

import re
import shutil
import uuid

import pytest

import compat_data as cd

pytestmark = pytest.mark.slow

REMOTE = "hx"


@pytest.fixture(scope="module")
def rclone(shared_node, tmp_path_factory):
    exe = cd.find_program("rclone", "apt-get install rclone")
    conf_dir = tmp_path_factory.mktemp("rclonecfg")
    (conf_dir / "rclone.conf").write_text("")
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env = cd.clean_env({
        "RCLONE_CONFIG": str(conf_dir / "rclone.conf"),
        "RCLONE_CACHE_DIR": str(conf_dir / "cache"),
        prefix + "TYPE": "s3",
        prefix + "PROVIDER": "Other",
        prefix + "ENV_AUTH": "false",
        prefix + "ACCESS_KEY_ID": shared_node.access_key,
        prefix + "SECRET_ACCESS_KEY": shared_node.secret_key,
        prefix + "ENDPOINT": shared_node.endpoint,
        prefix + "REGION": "us-east-1",
        prefix + "FORCE_PATH_STYLE": "true",
        "HOME": str(conf_dir),
    })
    env.pop("AWS_CA_BUNDLE", None)
    return cd.Client("rclone", [exe, "--retries", "1", "--low-level-retries", "2", "-v"], env)


@pytest.fixture
def bucket_name(shared_node):
    name = f"compat-rclone-{uuid.uuid4().hex[:12]}"
    yield name
    cd.drop_bucket(shared_node, name)


def lsd_buckets(out: str) -> list[str]:
    # `rclone lsd remote:` prints "  -1 2024-01-01 00:00:00  -1 NAME" per bucket.
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def ls_files(out: str) -> dict[str, int]:
    # `rclone ls` prints "SIZE PATH" per object, the size right-aligned.
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+) (.+)$", line)
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def test_rclone_workflow(rclone, shared_node, bucket_name, tmp_path):
    b = bucket_name
    r = f"{REMOTE}:{b}"
    small = cd.make_small(tmp_path / "small.txt")
    big = cd.make_big(tmp_path / "bigdir" / "big.bin")
    tree = cd.make_tree(tmp_path / "tree")

    rclone("mkdir", "mkdir", r)
    assert b in lsd_buckets(rclone("lsd", "lsd", f"{REMOTE}:").stdout)

    rclone("copyto small", "copyto", str(small), f"{r}/small.txt")
    rclone("copy 50 MiB (multipart, 5 MiB parts)", "copy", "--s3-upload-cutoff", "5M",
           "--s3-chunk-size", "5M", str(big.parent), f"{r}/bigdir")
    listed = ls_files(rclone("ls bucket", "ls", r).stdout)
    assert listed == {"small.txt": small.stat().st_size, "bigdir/big.bin": cd.BIG_BYTES}
    # Ten 5 MiB parts: the object carries the multipart ETag of exactly those parts.
    assert cd.etag_of(shared_node, b, "bigdir/big.bin") == cd.multipart_etag(big, 5 * cd.MIB)
    rclone("check big (size + md5)", "check", str(big.parent), f"{r}/bigdir")

    part = tmp_path / "range.out"
    rclone("cat --offset 1000 --count 100", "cat", "--offset", "1000", "--count", "100",
           f"{r}/bigdir/big.bin", stdout_path=part)
    assert part.read_bytes() == cd.read_range(big, cd.RANGE_FIRST, cd.RANGE_LAST)

    back = tmp_path / "big.down"
    rclone("copyto big down", "copyto", f"{r}/bigdir/big.bin", str(back))
    assert cd.sha256_file(back) == cd.sha256_file(big)
    small_back = tmp_path / "small.down"
    rclone("copyto small down", "copyto", f"{r}/small.txt", str(small_back))
    assert small_back.read_bytes() == small.read_bytes()

    rclone("sync tree up", "sync", str(tree), f"{r}/tree")
    rclone("check tree", "check", str(tree), f"{r}/tree")
    remote_tree = ls_files(rclone("ls tree", "ls", f"{r}/tree").stdout)
    assert sorted(remote_tree) == sorted(cd.tree_digest(tree))

    # Local changes: one file deleted, one changed, one added; sync must mirror all three.
    tree2 = tmp_path / "tree2"
    shutil.copytree(tree, tree2)
    (tree2 / "a" / "f1.bin").unlink()
    with open(tree2 / "a" / "b" / "c" / "deep1.txt", "a") as f:
        f.write("changed\n")
    (tree2 / "a" / "new file+1.txt").write_text("new\n")
    rclone("sync after local changes", "sync", str(tree2), f"{r}/tree")
    rclone("check tree after changes", "check", str(tree2), f"{r}/tree")
    remote_tree = ls_files(rclone("ls tree after changes", "ls", f"{r}/tree").stdout)
    assert "a/f1.bin" not in remote_tree
    assert "a/new file+1.txt" in remote_tree
    assert sorted(remote_tree) == sorted(cd.tree_digest(tree2))
    down = tmp_path / "tree-down"
    rclone("copy tree down", "copy", f"{r}/tree", str(down))
    cd.assert_same_tree(tree2, down)

    rclone("server-side copyto", "copyto", f"{r}/small.txt", f"{r}/copy of small.txt")
    copy_back = tmp_path / "copy.down"
    rclone("copyto copy down", "copyto", f"{r}/copy of small.txt", str(copy_back))
    assert copy_back.read_bytes() == small.read_bytes()

    rclone("deletefile", "deletefile", f"{r}/small.txt")
    listed = ls_files(rclone("ls after deletefile", "ls", r).stdout)
    assert "small.txt" not in listed and "copy of small.txt" in listed

    rclone("delete everything", "delete", r)
    assert ls_files(rclone("ls after delete", "ls", r).stdout) == {}
    rclone("rmdir", "rmdir", r)
    assert b not in lsd_buckets(rclone("lsd after rmdir", "lsd", f"{REMOTE}:").stdout)
