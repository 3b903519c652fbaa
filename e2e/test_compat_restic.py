"""Compatibility: restic (Debian's package) keeps a backup repository in a Hamster bucket.

Proves that a user can create a restic repository in a bucket, back up a directory holding the
awkward-names tree and a 50 MiB file, see one snapshot, verify every pack byte by byte
(`check --read-data`), restore the latest snapshot into an identical tree, back up again after a
change and see two snapshots, then `forget --keep-last 1 --prune` (which rewrites and deletes
packs) and still pass `check --read-data` with one snapshot left. restic leans on exact object
sizes, listings with prefixes, ranged reads and deletes: any deviation shows up as a failed
check.

How: restic runs as a subprocess with RESTIC_REPOSITORY=s3:http://127.0.0.1:PORT/BUCKET/repo,
path-style bucket lookup, the node's key in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and its
cache in the test's tmp dir. One `hamster serve` on loopback per module (`shared_node`); the
bucket is removed with boto3 afterwards, even on failure.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

import compat_data as cd

pytestmark = pytest.mark.slow


@pytest.fixture
def bucket_name(shared_node):
    name = f"compat-restic-{uuid.uuid4().hex[:12]}"
    yield name
    cd.drop_bucket(shared_node, name)


def restic_client(node, bucket: str, work) -> cd.Client:
    exe = cd.find_program("restic", "apt-get install restic")
    env = cd.clean_env({
        "RESTIC_REPOSITORY": f"s3:{node.endpoint}/{bucket}/repo",
        "RESTIC_PASSWORD": "compat-suite-password",
        "RESTIC_CACHE_DIR": str(work / "cache"),
        "AWS_ACCESS_KEY_ID": node.access_key,
        "AWS_SECRET_ACCESS_KEY": node.secret_key,
        "HOME": str(work),
    })
    return cd.Client("restic", [exe, "-o", "s3.bucket-lookup=path", "-o", "s3.region=us-east-1"],
                     env)


def snapshots(restic) -> list[dict]:
    out = restic("snapshots", "snapshots", "--json").stdout
    return json.loads(out or "[]")


def test_restic_backup_check_restore_prune(shared_node, bucket_name, tmp_path):
    restic = restic_client(shared_node, bucket_name, tmp_path)
    src = tmp_path / "src"
    cd.make_tree(src / "tree")
    cd.make_big(src / "big.bin")

    restic("init (creates the bucket)", "init")
    restic("backup tree + 50 MiB", "backup", "--host", "compat", str(src))
    assert len(snapshots(restic)) == 1
    restic("check --read-data", "check", "--read-data")

    target = tmp_path / "restore"
    restic("restore latest", "restore", "latest", "--target", str(target))
    # restic restores absolute paths below the target.
    cd.assert_same_tree(src, target / src.relative_to(src.anchor))

    with open(src / "tree" / "a" / "b" / "c" / "deep2.txt", "a") as f:
        f.write("changed for the second snapshot\n")
    (src / "tree" / "added.txt").write_text("added\n")
    restic("second backup", "backup", "--host", "compat", str(src))
    assert len(snapshots(restic)) == 2

    restic("forget --keep-last 1 --prune", "forget", "--keep-last", "1", "--prune")
    left = snapshots(restic)
    assert len(left) == 1
    restic("check --read-data after prune", "check", "--read-data")

    again = tmp_path / "restore2"
    restic("restore latest after prune", "restore", "latest", "--target", str(again))
    cd.assert_same_tree(src, again / src.relative_to(src.anchor))
    shutil.rmtree(again)
