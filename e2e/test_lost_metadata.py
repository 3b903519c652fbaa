"""A node whose metadata store is lost never starts as a new cluster and never deletes shards.

Before, a node whose `meta/` was emptied, deleted or truncated to zero bytes started as a fresh
one-node cluster with an empty namespace, and its orphan sweep then removed every shard file on
its disk. Here, on real processes:

- one node: with `meta/data.mdb` truncated to 0 bytes, deleted, or `meta/` removed, `serve`
  exits non-zero with one line naming `recover-meta` and the backup, and not one shard file is
  touched; `recover-meta` refuses (no other copy exists) and points to the backup; restoring
  `meta/` from a copy brings every object back.
- a cluster member (the founder of three): with `meta/` removed, `serve` refuses the same way
  and keeps its shard files; `hamster recover-meta` has the running members re-admit it; it
  then starts, fills its store from the leader, becomes a voter again, serves every object,
  and still holds every shard file it had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import cluster
import harness

REFUSE_WAIT = 30.0


def put_objects(client, bucket: str, n: int, size: int = 40_000) -> dict[str, bytes]:
    client.create_bucket(Bucket=bucket)
    objects = {}
    for i in range(n):
        body = os.urandom(size + i)
        key = f"obj/{i:03d}"
        client.put_object(Bucket=bucket, Key=key, Body=body)
        objects[key] = body
    return objects


def assert_readable(client, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert got == body, f"{key} read back different bytes"


def eventually_readable(client, bucket: str, objects: dict[str, bytes],
                        timeout: float = 30.0) -> None:
    """Reads every object, retrying while the cluster elects a leader or catches up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            assert_readable(client, bucket, objects)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def shard_set(node) -> set[str]:
    root = node.data_dir / "shards"
    return {str(p.relative_to(root)) for p in harness.shard_files(node.data_dir)}


def start_expecting_refusal(node) -> str:
    node.start(wait=False)
    try:
        node.proc.wait(REFUSE_WAIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{node.name} kept running on a lost metadata store:\n"
                             f"{node.stderr_tail()}")
    harness._LIVE.pop(node.proc.pid, None)
    assert node.proc.returncode != 0
    err = node.stderr()
    assert "refusing to start" in err and "recover-meta" in err, err
    return err


def test_single_node_refuses_every_kind_of_lost_store_and_deletes_nothing(node_factory, tmp_path):
    node = node_factory("solo")
    client = node.client()
    objects = put_objects(client, "keep", 8)
    node.stop()
    before = shard_set(node)
    assert len(before) == len(objects)
    meta = node.data_dir / "meta"
    backup = tmp_path / "meta-backup"
    shutil.copytree(meta, backup)

    def lose_by_truncation():
        with open(meta / "data.mdb", "r+b") as f:
            f.truncate(0)

    def lose_by_deletion():
        (meta / "data.mdb").unlink()

    def lose_the_directory():
        shutil.rmtree(meta)

    for lose in (lose_by_truncation, lose_by_deletion, lose_the_directory):
        lose()
        start_expecting_refusal(node)
        assert shard_set(node) == before, f"shard files changed after {lose.__name__}"
        assert not (meta / "data.mdb").exists() or (meta / "data.mdb").stat().st_size == 0

    r = harness.run_cli(["recover-meta", "--data", str(node.data_dir)])
    assert r.returncode != 0
    assert "only member" in r.stderr and "backup" in r.stderr, r.stderr
    assert shard_set(node) == before

    # The documented way back on one node: restore meta/ from the backup.
    shutil.rmtree(meta, ignore_errors=True)
    shutil.copytree(backup, meta)
    node.start()
    assert_readable(node.client(), "keep", objects)
    assert shard_set(node) == before


def test_cluster_member_with_lost_metadata_is_rebuilt_from_the_others(node_factory):
    nodes, _ = cluster.form(node_factory, "lm", 3)
    founder = nodes[0]
    client = founder.client()
    objects = put_objects(client, "survive", 20)
    founder.stop()
    before = shard_set(founder)
    assert len(before) >= len(objects) // 2, "the founder should hold shards of most objects"

    shutil.rmtree(founder.data_dir / "meta")
    start_expecting_refusal(founder)
    assert shard_set(founder) == before

    # The other two still serve everything (a quorum of three voters).
    other = nodes[1].client(founder.access_key, founder.secret_key)
    eventually_readable(other, "survive", objects)

    r = harness.run_cli(["recover-meta", "--data", str(founder.data_dir)])
    assert r.returncode == 0, r.stderr
    assert "learner" in r.stdout

    founder.start()
    cluster.wait_agreed(nodes)
    eventually_readable(founder.client(), "survive", objects)
    # Nothing of the founder's was deleted by its start-up sweep.
    assert before <= shard_set(founder)
    # And it takes writes again.
    client = founder.client()
    client.put_object(Bucket="survive", Key="after", Body=b"x" * 5000)
    assert client.get_object(Bucket="survive", Key="after")["Body"].read() == b"x" * 5000

    # A restart after the rebuild is an ordinary restart.
    founder.restart()
    eventually_readable(founder.client(), "survive", objects)
    assert not (founder.data_dir / "meta-rebuild").exists()
