"""A cluster that lives, with real processes over loopback mTLS: grow, drain (of a live and of
a dead node, across a profile boundary), undrain, remove and optimize after data exists, one
layout change at a time, with every acknowledged object reading back identical throughout.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid

import pytest

import cluster
import harness

MIB = 1024 * 1024
# A transition on a small store moves in seconds; generous for a loaded CI machine.
TRANSITION_TIMEOUT = 240.0


def cli(node, *args: str, timeout: float = 300):
    return harness.run_cli([*args, "--data", str(node.data_dir)], timeout=timeout)


def layout_of(node) -> dict:
    r = cluster.status(node)
    assert r is not None, node.report()
    return r["layout"]


def wait_transition_done(node, version_above: int = 0, timeout: float = TRANSITION_TIMEOUT) -> dict:
    """Waits until the layout is past `version_above` with no transition open."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = cluster.status(node)
        if r is not None and r.get("layout"):
            last = r["layout"]
            if last["version"] > version_above and last.get("transition") is None:
                return last
        time.sleep(1)
    raise AssertionError(f"layout transition did not finish within {timeout}s: {last}")


def shards_on(node) -> int:
    return len(harness.shard_files(node.data_dir))


def write_objects(s3, bucket: str, rng: random.Random, n: int, prefix: str) -> dict:
    sizes = [0, 1, 4096, 100_000, 300_000, MIB + 3, 2 * MIB]
    out = {}
    for i in range(n):
        data = rng.randbytes(sizes[i % len(sizes)])
        key = f"{prefix}/{i:03d}"
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        out[key] = data
    return out


def check_all(s3, bucket: str, objects: dict) -> None:
    for key, data in objects.items():
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert got == data, key


class Load:
    """Continuous PUTs and GETs on one node while an operation runs: every request must
    succeed and every acknowledged object read back identical (the zero-error contract)."""

    def __init__(self, s3, bucket: str, seed: int, sizes=(10, 5000, 200_000, 700_000)):
        self.s3, self.bucket, self.sizes = s3, bucket, sizes
        self.rng = random.Random(seed)
        self.written: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.requests = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key = f"load/{i:05d}"
            data = self.rng.randbytes(self.rng.choice(self.sizes))
            try:
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
                self.written[key] = data
                self.requests += 1
                back = self.rng.choice(list(self.written))
                got = self.s3.get_object(Bucket=self.bucket, Key=back)["Body"].read()
                self.requests += 1
                if got != self.written[back]:
                    self.errors.append(f"{back}: read back different bytes")
            except Exception as e:  # noqa: BLE001 - every failure counts against the contract
                self.errors.append(f"{key}: {e}")
            i += 1
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=60)


def test_grow_moves_data_onto_the_new_node_and_optimize_widens_it(node_factory):
    nodes, reports = cluster.form(node_factory, "grow", n=3)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[0].client(ak, sk)
    bucket = f"grow-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(3)
    objects = write_objects(s3, bucket, rng, 28, "before")
    before = layout_of(nodes[0])
    assert len(before["nodes"]) == 3

    with Load(nodes[1].client(ak, sk), bucket, seed=4) as load:
        newcomer = node_factory("grow-3", token=cluster.mint(nodes[0]))
        nodes.append(newcomer)
        cluster.wait_agreed(nodes)
        grown = wait_transition_done(nodes[0], before["version"])
        assert len(grown["nodes"]) == 4, grown
    assert load.errors == [], load.errors[:5]
    assert load.requests > 10
    # Existing data moved onto the newcomer at its own profile: it holds shards of the
    # objects written before it joined.
    assert shards_on(newcomer) > 0
    check_all(nodes[3].client(ak, sk), bucket, objects)
    check_all(s3, bucket, load.written)

    # Optimize re-encodes the 2+1 parts of three nodes to 3+1, and nothing is lost.
    with Load(nodes[3].client(ak, sk), bucket, seed=5) as load:
        r = cli(nodes[2], "optimize", "--json")
    assert r.returncode == 0, r.stderr
    assert load.errors == [], load.errors[:5]
    objects.update(load.written)
    done = layout_of(nodes[0])
    assert done.get("transition") is None
    status = cluster.status(nodes[0])
    check_all(nodes[2].client(ak, sk), bucket, objects)
    # Every coded part now has four shards: one on each node.
    counts = [shards_on(n) for n in nodes]
    assert min(counts) > 0, counts
    assert status["layout"]["version"] > grown["version"]


def test_one_layout_change_at_a_time_and_undrain_reverses_a_drain(node_factory):
    # Migrations throttled, so a transition is still open when the next change is asked for.
    nodes, reports = cluster.form(node_factory, "guard", n=4,
                                  extra_args=["--migrate-rate", "256KiB"])
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[0].client(ak, sk)
    bucket = f"guard-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    objects = write_objects(s3, bucket, random.Random(7), 14, "g")
    target = reports[0]["members"][-1]["node_id"]

    # 4 → 3 nodes crosses a profile boundary: without --yes a script is refused, nothing changes.
    r = cli(nodes[1], "drain", target)
    assert r.returncode != 0
    assert "shrink" in r.stderr and "--yes" in r.stderr, r.stderr
    assert layout_of(nodes[0]).get("transition") is None

    r = cli(nodes[1], "drain", target, "--yes", "--detach")
    assert r.returncode == 0, r.stderr
    layout = layout_of(nodes[0])
    assert layout["transition"]["op"] == {"op": "drain", "node": int(target, 16)}

    # A second layout change is refused, naming the open one, through any member.
    r = cli(nodes[2], "optimize")
    assert r.returncode != 0
    assert "drain" in r.stderr and "one layout change at a time" in r.stderr, r.stderr

    # Undrain replaces the open drain; the node takes shards again.
    r = cli(nodes[3], "undrain", target)
    assert r.returncode == 0, r.stderr
    after = wait_transition_done(nodes[0], layout["version"])
    assert int(target, 16) in {int(k) for k in after["nodes"]}
    assert not after.get("retired")
    check_all(nodes[2].client(ak, sk), bucket, objects)


def test_a_dead_disk_is_drained_removed_and_the_cluster_then_survives_two_more_losses(node_factory):
    nodes, reports = cluster.form(node_factory, "dead", n=6, voters=5)
    leader_id = reports[0]["leader"]
    ids = cluster.by_id(nodes, reports)
    leader = ids[leader_id]
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    bucket = f"dead-{uuid.uuid4().hex[:8]}"
    nodes[0].client(ak, sk).create_bucket(Bucket=bucket)
    rng = random.Random(11)
    objects = write_objects(nodes[0].client(ak, sk), bucket, rng, 36, "d")
    # A multipart upload completed and one still in progress.
    s3 = nodes[0].client(ak, sk)
    up = s3.create_multipart_upload(Bucket=bucket, Key="multi")
    parts = [rng.randbytes(5 * MIB), rng.randbytes(1234)]
    etags = []
    for n, p in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key="multi", UploadId=up["UploadId"], PartNumber=n, Body=p)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": etags})
    objects["multi"] = b"".join(parts)

    # A disk dies for good: never the leader, never the node we talk through.
    via = nodes[0] if nodes[0] is not leader else nodes[1]
    dead = next(n for n in nodes if n is not leader and n is not via)
    dead_id = next(i for i, n in ids.items() if n is dead)
    dead.kill9()
    live = [n for n in nodes if n is not dead]

    # `remove` refuses a node that still holds shards.
    r = cli(via, "remove", dead_id)
    assert r.returncode != 0 and "drain it first" in r.stderr, r.stderr

    # Draining the dead node rebuilds its shards from the survivors, re-encoding 4+2 parts to
    # 3+2 on the five left; the drain follows the move until it is done.
    with Load(via.client(ak, sk), bucket, seed=12) as load:
        r = cli(via, "drain", dead_id, "--yes")
    assert r.returncode == 0, r.stderr + r.stdout
    assert load.errors == [], load.errors[:5]
    objects.update(load.written)
    layout = layout_of(via)
    assert layout.get("transition") is None
    assert str(int(dead_id, 16)) in layout["retired"], layout
    assert layout["retired"][str(int(dead_id, 16))]["state"] == "drained"
    check_all(via.client(ak, sk), bucket, objects)
    # The copies the moves unlinked on the dead node cannot be deleted there; status says so.
    stale = cluster.status(via)["stale_shards"]
    assert stale > 0
    assert f"stale shards:  {stale} " in cli(via, "status").stdout

    r = cli(via, "remove", dead_id, "--json")
    assert r.returncode == 0, r.stderr
    report = cluster.status(via)
    assert dead_id not in {m["node_id"] for m in report["members"]}
    assert report["layout"]["retired"][str(int(dead_id, 16))]["state"] == "tombstoned"
    # Its disk is wiped before any reuse: nothing is left to delete there.
    assert report["stale_shards"] == 0

    # The removed node, started again on its old data dir, is told it was removed and stops
    # (at the latest when it asks the cluster anything, as a read does).
    dead.start(wait=False)
    deadline = time.monotonic() + 60
    while dead.running() and time.monotonic() < deadline:
        try:
            dead.client(ak, sk).list_objects_v2(Bucket=bucket, MaxKeys=1)
        except Exception:  # noqa: BLE001 - it is expected to fail or not answer
            pass
        time.sleep(1)
    assert not dead.running(), "the removed node kept running"
    assert "removed from the cluster" in dead.stderr(), dead.stderr_tail()
    report = cluster.status(via)
    assert dead_id not in {m["node_id"] for m in report["members"]}

    # Two more nodes die: every object still reads (3+2 over five nodes tolerates two).
    others = [n for n in live if n is not leader and n is not via][:2]
    for n in others:
        n.kill9()
    check_all(via.client(ak, sk), bucket, objects)


def test_replace_a_dead_node_on_a_tight_cluster(node_factory):
    # Four nodes code 3+1: every node holds a shard of every coded part.
    nodes, reports = cluster.form(node_factory, "tight", n=4)
    ids = cluster.by_id(nodes, reports)
    leader = ids[reports[0]["leader"]]
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    via = nodes[0] if nodes[0] is not leader else nodes[1]
    s3 = via.client(ak, sk)
    bucket = f"tight-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    objects = write_objects(s3, bucket, random.Random(5), 21, "t")
    before = layout_of(via)

    dead = next(n for n in nodes if n is not leader and n is not via)
    dead_id = next(i for i, n in ids.items() if n is dead)
    dead.kill9()
    # Members probe each other every second: past that, writes place around the dead node.
    time.sleep(2.5)
    # An id that is no member is refused at the door, token unused.
    token = cluster.mint(via)
    with pytest.raises(harness.NodeExited):
        node_factory("tight-bad", token=token, extra_args=["--replaces", "00000000000000ff"])

    # While a node of a 3+1 cluster is dead, coded writes cannot reach their floor of four
    # shards (the seeds' rule); replicated small objects (1+1) go on, and must, throughout.
    with Load(s3, bucket, seed=6, sizes=(10, 5000, 100_000)) as load:
        newcomer = node_factory("tight-new", token=token, extra_args=["--replaces", dead_id])
        done = wait_transition_done(via, before["version"])
    assert load.errors == [], load.errors[:5]
    objects.update(load.written)
    new_id = cluster.status(newcomer)["node_id"]
    assert str(int(new_id, 16)) in done["nodes"], done
    assert str(int(dead_id, 16)) not in done["nodes"], done
    assert done["retired"][str(int(dead_id, 16))]["state"] == "drained"
    assert len(done["nodes"]) == 4
    # A pure migration: the newcomer holds the dead node's shards, rebuilt from the others.
    assert shards_on(newcomer) > 0
    check_all(newcomer.client(ak, sk), bucket, objects)

    with Load(s3, bucket, seed=7, sizes=(10, 5000, 100_000)) as load:
        r = cli(via, "remove", dead_id)
    assert r.returncode == 0, r.stderr
    assert load.errors == [], load.errors[:5]
    objects.update(load.written)
    # Full redundancy again: one more node may die.
    other = next(n for n in nodes if n not in (leader, via, dead))
    other.kill9()
    check_all(s3, bucket, objects)
