"""Garbage that is never forgotten: the shard files of deleted objects are gone after a stop.

One node stores 2,000 small objects, deletes them all with two DeleteObjects requests and is
stopped with SIGTERM the moment the second answers, before its reclaimer can have deleted every
shard file. The commits that freed the bodies recorded them in the node's freed queue, so on the
next start:

- S3 answers within 5 s of the process starting (nothing long runs before it serves);
- within a bounded wait no shard file of any deleted object is left under DIR/shards, and the
  queue's gauge `hamster_reclaim_pending_bodies` is back to 0;
- the start says it drained freed bodies, never that it refused an orphan sweep or removed the
  deleted bodies as orphans of interrupted writes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import harness

OBJECTS = 2000
WRITERS = 16
SERVE_WITHIN_S = 5.0
RECLAIM_WITHIN_S = 60.0


def metric(node, name: str) -> float | None:
    for line in node.metrics_text().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_deleted_objects_leave_no_shard_files_after_sigterm(node_factory):
    node = node_factory("reclaim")
    s3 = node.client()
    s3.create_bucket(Bucket="gone")
    keys = [f"k/{i:05d}" for i in range(OBJECTS)]

    def put(key: str) -> None:
        s3.put_object(Bucket="gone", Key=key, Body=key.encode() * 8)

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(put, keys))
    stored = set(harness.shard_files(node.data_dir))
    assert len(stored) == OBJECTS, f"one shard file per object, found {len(stored)}"

    for start in range(0, OBJECTS, 1000):
        batch = [{"Key": k} for k in keys[start:start + 1000]]
        out = s3.delete_objects(Bucket="gone", Delete={"Objects": batch, "Quiet": True})
        assert not out.get("Errors"), out["Errors"][:3]
    code, _ = node.stop()
    assert code == 0, node.report()
    left_at_stop = len(stored & set(harness.shard_files(node.data_dir)))
    print(f"shard files of deleted objects left at the stop: {left_at_stop}")

    began = time.monotonic()
    node.start(wait=False)
    client = node.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0})
    while True:
        try:
            listed = client.list_objects_v2(Bucket="gone")
            break
        except Exception as e:  # not listening yet
            assert node.running(), node.report()
            assert time.monotonic() - began < SERVE_WITHIN_S, \
                f"S3 not serving {SERVE_WITHIN_S}s after the start ({e}):\n{node.report()}"
            time.sleep(0.05)
    served_s = time.monotonic() - began
    print(f"S3 served {served_s:.2f}s after the restart")
    assert served_s < SERVE_WITHIN_S
    assert listed.get("KeyCount", 0) == 0, listed.get("Contents", [])[:3]

    deadline = time.monotonic() + RECLAIM_WITHIN_S
    while True:
        remaining = stored & set(harness.shard_files(node.data_dir))
        if not remaining or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not remaining, (f"{len(remaining)} shard files of deleted objects still on disk, "
                           f"e.g. {sorted(p.name for p in remaining)[:3]}\n{node.report()}")
    assert metric(node, "hamster_reclaim_pending_bodies") == 0

    log = node.stderr()
    assert "not sweeping orphan shards" not in log, node.report()
    assert "orphan bodies" not in log, "deleted bodies were removed as orphans:\n" + node.report()
    if left_at_stop:
        assert "freed bodies the last stop left queued" in log, node.report()
