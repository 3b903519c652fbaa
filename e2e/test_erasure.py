"""The erasure-coded data plane with real processes: six nodes over loopback mTLS store objects
4+2 (small ones 1+2), spread over six different data dirs.

- About a hundred objects of varied sizes, a multipart upload and ranged GETs, through
  different nodes.
- Two nodes killed mid-workload: reads reconstruct; with one down, writes are acknowledged at
  the floor; with two down, a coded write is refused with `SlowDown` and leaves nothing
  visible, while reads keep serving from exactly k shards.
- Restarted, `hamster repair` restores full redundancy; a second sweep finds nothing to do.
- A shard bit-flipped on disk is found by repair and rebuilt, without anyone reading it.
- `hamster status` counts each node's shards and bytes, and shows capacity in binary units.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import cluster
import harness

MIB = 1024 * 1024
# Below this a part is stored as replicas (k = 1), at or above it coded k+m.
SMALL_OBJECT_BYTES = 128 * 1024


def counter(node, name: str) -> int:
    """The value of the unlabelled counter `name` in `node`'s /metrics."""
    for line in node.metrics_text().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not exported")


def shard_index(p: Path) -> tuple[str, int, int]:
    """(body id, part, shard index) from a shard file name `<id>.<part>.<index>`."""
    body, part, index = p.name.split(".")
    return body, int(part), int(index)


def repair(node, *args: str) -> tuple[int, dict]:
    r = harness.run_cli(["repair", "--json", "--data", str(node.data_dir), *args], timeout=300)
    out = r.stdout.strip()
    return r.returncode, json.loads(out) if out.startswith("{") else {"stderr": r.stderr}


def put(s3, bucket, key, data) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data)


def get(s3, bucket, key, **kw) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def test_six_nodes_code_4_plus_2_survive_two_losses_and_repair(node_factory):
    nodes, reports = cluster.form(node_factory, "ec", n=6, voters=5)
    leader = cluster.by_id(nodes, reports)[reports[0]["leader"]]
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    clients = [n.client(ak, sk) for n in nodes]
    bucket = f"ec-{uuid.uuid4().hex[:10]}"
    clients[0].create_bucket(Bucket=bucket)
    rng = random.Random(6)

    # One coded object first: its six shards sit on six different data dirs.
    first = rng.randbytes(3 * MIB + 12345)
    put(clients[1], bucket, "first", first)
    homes = {}
    for n in nodes:
        for p in harness.shard_files(n.data_dir):
            body, part, index = shard_index(p)
            homes.setdefault(body, []).append((index, n.name))
    assert len(homes) == 1, homes
    (placed,) = homes.values()
    assert sorted(i for i, _ in placed) == list(range(6)), placed
    assert len({name for _, name in placed}) == 6, placed
    assert get(clients[4], bucket, "first") == first

    # About a hundred objects of varied sizes, through every node.
    sizes = [0, 1, 100, 4096, SMALL_OBJECT_BYTES - 1, SMALL_OBJECT_BYTES, 300_000, MIB, 2 * MIB + 7]
    objects = {"first": first}
    for i in range(96):
        size = sizes[i % len(sizes)] if i < 2 * len(sizes) else rng.randrange(0, 700_000)
        data = rng.randbytes(size)
        key = f"obj/{i:03d}"
        put(clients[i % 6], bucket, key, data)
        objects[key] = data
    # A multipart upload: its parts are coded on their own and stitched on read.
    parts = [rng.randbytes(5 * MIB), rng.randbytes(5 * MIB), rng.randbytes(777_777)]
    up = clients[2].create_multipart_upload(Bucket=bucket, Key="multi")
    etags = []
    for n, part in enumerate(parts, start=1):
        r = clients[n % 6].upload_part(Bucket=bucket, Key="multi", UploadId=up["UploadId"],
                                       PartNumber=n, Body=part)
        etags.append({"PartNumber": n, "ETag": r["ETag"]})
    clients[3].complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": etags})
    objects["multi"] = b"".join(parts)

    def check_all(via, ranged: int = 20) -> None:
        for key, data in objects.items():
            assert get(via, bucket, key) == data, key
        keys = [k for k, d in objects.items() if len(d) > 2]
        for key in rng.sample(keys, min(ranged, len(keys))):
            data = objects[key]
            a = rng.randrange(0, len(data) - 1)
            b = rng.randrange(a, len(data))
            got = get(via, bucket, key, Range=f"bytes={a}-{b}")
            assert got == data[a:b + 1], (key, a, b)

    check_all(clients[5])

    # Kill a node (never the one we talk to, nor the leader, so no election interferes):
    # coded writes ack at the floor of 5.
    via, s3 = nodes[0], clients[0]
    first_dead, second_dead = [n for n in nodes[1:] if n is not leader][-2:]
    first_dead.kill9()
    for i in range(4):
        data = rng.randbytes(400_000 + i)
        put(s3, bucket, f"degraded/{i}", data)
        objects[f"degraded/{i}"] = data
    check_all(s3)

    # Kill a second: a coded write is refused with SlowDown and nothing shows; reads still
    # decode from exactly four shards.
    second_dead.kill9()
    with pytest.raises(ClientError) as refused:
        put(s3, bucket, "refused", rng.randbytes(600_000))
    assert harness.error_code(refused.value) == "SlowDown"
    assert harness.http_status(refused.value) == 503
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=bucket, Key="refused")
    assert harness.http_status(missing.value) == 404
    check_all(s3)

    # A third node down leaves "first" three of its six shards: a passing condition, not
    # damage, so 503 with Retry-After rather than 500 "run hamster repair" (which could not
    # help while the nodes are away).
    third_dead = next(n for n in nodes[1:] if n not in (leader, first_dead, second_dead))
    third_dead.kill9()
    with pytest.raises(ClientError) as away:
        get(s3, bucket, "first")
    assert harness.http_status(away.value) == 503, away.value.response
    assert away.value.response["ResponseMetadata"]["HTTPHeaders"].get("retry-after") == "1"
    third_dead.start()

    # Back up: what the degraded writes missed is rebuilt, by the writing node's heal-soon list
    # as their homes answer or by repair, whichever comes first (never both: both run on
    # `via`, which claims each part for one of them); a second sweep is clean.
    first_dead.start()
    second_dead.start()
    cluster.wait_agreed(nodes, voters=5)
    code, report = repair(via)
    assert code == 0, json.dumps(report)
    healed_soon = counter(via, "hamster_scrub_shards_rebuilt_total")
    assert report["shards_rebuilt"] + healed_soon >= 4, (report, healed_soon)
    assert report["unrecoverable"] == [] and report["failed"] == [], json.dumps(report)
    code, again = repair(nodes[3])
    assert code == 0, again
    assert again["shards_rebuilt"] == 0 and again["shards_unreachable"] == 0, again
    assert again["shards_verified"] == report["shards_verified"] + report["shards_rebuilt"], again

    # A bit flipped in one shard file is found by the sweep and rebuilt, unread.
    victim = max(harness.shard_files(nodes[2].data_dir), key=lambda p: p.stat().st_size)
    before = victim.read_bytes()
    with open(victim, "r+b") as f:
        f.seek(len(before) // 2)
        byte = f.read(1)
        f.seek(len(before) // 2)
        f.write(bytes([byte[0] ^ 0x10]))
        f.flush()
        os.fsync(f.fileno())
    code, healed = repair(via)
    assert code == 0, healed
    assert healed["shards_rebuilt"] == 1, healed
    assert victim.read_bytes() == before
    check_all(clients[2], ranged=5)
    metrics = nodes[0].metrics_text()
    assert "hamster_repair_shards_rebuilt_total" in metrics


def test_status_counts_each_nodes_shards_in_human_units(node_factory):
    """`hamster status` reports, per member, the shards that member holds and their bytes as
    the member itself counts them: across three nodes (2+1; small objects 1+1) they add up to
    exactly the shards the writes made and match the files in each data dir. Capacity reads in
    binary units on the table (raw bytes stay in `--json`), and `hamster status` whose reader
    went away ends cleanly."""
    nodes, reports = cluster.form(node_factory, "st", n=3)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[1].client(ak, sk)
    bucket = f"st-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(16)
    coded = [SMALL_OBJECT_BYTES, 300_000, MIB + 3, 2 * MIB]
    small = [0, 1, 4096, SMALL_OBJECT_BYTES - 1]
    for i, size in enumerate(coded + small):
        put(s3, bucket, f"obj/{i}", rng.randbytes(size))
    written = 3 * len(coded) + 2 * len(small)

    report = cluster.status(nodes[2])
    assert report is not None
    by_node = cluster.by_id(nodes, reports)
    members = {m["node_id"]: m for m in report["members"]}
    assert set(members) == set(by_node), report
    assert sum(m["shard_count"] for m in members.values()) == written, report
    for node_id, m in members.items():
        files = harness.shard_files(by_node[node_id].data_dir)
        assert m["shard_count"] == len(files), (node_id, m, files)
        assert m["shard_bytes"] == sum(p.stat().st_size for p in files), (node_id, m)
        assert m["capacity_bytes"] > 0, m

    text = harness.run_cli(["status", "--data", str(nodes[2].data_dir)])
    assert text.returncode == 0, text.stderr
    lines = {line.split()[0]: line for line in text.stdout.splitlines()
             if line.strip() and line.split()[0] in members}
    assert set(lines) == set(members), text.stdout
    for node_id, line in lines.items():
        m = members[node_id]
        assert str(m["capacity_bytes"]) not in line, line
        assert re.search(r"\b\d+(\.\d)? (KiB|MiB|GiB|TiB|PiB|EiB)\b", line), line
        assert re.search(rf"\s{m['shard_count']}\s", line), line

    # The reader is gone before the first line is written (what `| head -1` leads to).
    proc = subprocess.Popen([harness.hamster_bin(), "status", "--data", str(nodes[2].data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=harness.child_env())
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        harness.stop_process(proc)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"panicked" not in err, err.decode(errors="replace")
