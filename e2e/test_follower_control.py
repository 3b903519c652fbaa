"""Followers that have sat idle serve control writes, S3 writes and reads on the first try, and
`hamster repair` on a node that is behind works from the leader's metadata, not its own.

Idle: a follower sends Raft requests to the leader (forwarded proposals, read-index questions)
over one pooled connection. Nothing else uses that direction (the leader's heartbeats ride its
own connections), so it sits unused while no client writes through that follower, and the
leader's cluster port closes a connection idle for 60 s (`RAFT_IDLE_MS_MAX`). These tests form a
3-node cluster, then leave it alone for `IDLE_S`, a little longer than that limit (the limit is
not a setting, so the wait is real; each test waits once, which is what makes them slow), and
then ask each follower (each has forwarded a request to the leader before) one thing: `hamster key create` on one and `hamster token` on the other
must exit 0 at once; the first S3 PUT through a follower must succeed (the S3 client here does
not retry) within `PROMPT_PUT_S`, and a GET through the other, which first confirms with the
leader that it is current, must read it back. The latencies are printed (`pytest -s`).

Repair: a follower stopped while objects (and many more metadata entries) are written has none
of their metadata when it starts again, and takes a moment to catch up. `hamster repair` run on
it as soon as it answers must still see every object written while it was down and rebuild the
shards deleted from another node (before, it swept its own stale replica and found nothing).
"""

from __future__ import annotations

import json
import re
import time
import uuid

import cluster
import harness

# The leader's cluster port drops a Raft connection idle for 60 s; wait past that.
IDLE_S = 66.0
# A warm PUT through a follower takes well under 100 ms on a debug build; one that has to dial
# a fresh connection first is allowed some slack for a loaded machine, but not a retry.
PROMPT_PUT_S = 1.0
# How many small objects the repair test writes while one node is down.
REPAIR_OBJECTS = 6
# Writes that place a shard on the stopped node are refused; attempts are bounded.
REPAIR_ATTEMPTS_MAX = 60
# Metadata entries (empty buckets) written while that node is down, so it is far behind.
FILLER_ENTRIES = 1500
# How long repair is retried while the restarted node is not answering yet.
REPAIR_WAIT_S = 60.0


def roles(nodes, reports):
    """(leader, [followers]) from agreed status reports."""
    ids = cluster.by_id(nodes, reports)
    leader = ids[reports[0]["leader"]]
    return leader, [n for n in nodes if n is not leader]


def idle(nodes) -> None:
    """Leaves the cluster without a single client request for IDLE_S; every node must still
    be up afterwards (the waiting itself proves nothing if one died)."""
    time.sleep(IDLE_S)
    for n in nodes:
        assert n.running(), f"{n.name} exited while idle:\n{n.stderr_tail()}"


def timed(call):
    start = time.monotonic()
    out = call()
    return out, time.monotonic() - start


def test_control_writes_on_idle_followers_commit_first_try(node_factory):
    nodes, reports = cluster.form(node_factory, "fctl")
    leader, (f1, f2) = roles(nodes, reports)
    # Each follower forwards one change to the leader first, as an operator's earlier
    # command would: that opens the pooled connection that then sits idle.
    for n, args in ((f1, ["key", "create", "before-idle"]), (f2, ["token"])):
        warm = harness.run_cli([*args, "--data", str(n.data_dir)])
        assert warm.returncode == 0, f"{args} on {n.name} before idle: {warm.stderr}"
    idle(nodes)

    made, made_s = timed(lambda: harness.run_cli(
        ["key", "create", "after-idle", "--data", str(f1.data_dir)]))
    assert made.returncode == 0, f"key create on idle follower {f1.name}: {made.stderr}"
    assert re.search(r"^access key:\s+HK\S+$", made.stdout, re.M), made.stdout

    minted, minted_s = timed(lambda: harness.run_cli(["token", "--data", str(f2.data_dir)]))
    assert minted.returncode == 0, f"token on idle follower {f2.name}: {minted.stderr}"
    assert minted.stdout.strip(), minted.stderr
    print(f"\nafter {IDLE_S:.0f} s idle: key create on a follower {made_s * 1000:.0f} ms, "
          f"token on the other {minted_s * 1000:.0f} ms")

    # Both committed: the leader lists the key, and the token admits a fourth node.
    listed = harness.run_cli(["key", "list", "--data", str(leader.data_dir)])
    assert listed.returncode == 0 and "after-idle" in listed.stdout, listed
    d = node_factory("fctl-3", token=minted.stdout.strip())
    cluster.wait_agreed([*nodes, d], voters=None)


def test_first_put_and_read_on_idle_followers_succeed_promptly(node_factory):
    nodes, reports = cluster.form(node_factory, "fput")
    leader, (f1, f2) = roles(nodes, reports)
    founder = nodes[0]
    bucket = f"idle-{uuid.uuid4().hex[:12]}"
    via_leader = leader.client(founder.access_key, founder.secret_key)
    via_leader.create_bucket(Bucket=bucket)
    s3_f1 = f1.client(founder.access_key, founder.secret_key)
    s3_f2 = f2.client(founder.access_key, founder.secret_key)
    # Warm: both followers forward a write and read one back, so their connections to the
    # leader are in use before the idle period, and the warm latency is known.
    _, warm_s = timed(lambda: s3_f1.put_object(Bucket=bucket, Key="warm-1", Body=b"w1"))
    s3_f2.put_object(Bucket=bucket, Key="warm-2", Body=b"w2")
    assert s3_f2.get_object(Bucket=bucket, Key="warm-1")["Body"].read() == b"w1"
    assert s3_f1.get_object(Bucket=bucket, Key="warm-2")["Body"].read() == b"w2"
    idle(nodes)

    body = uuid.uuid4().bytes * 64
    _, first_s = timed(lambda: s3_f1.put_object(Bucket=bucket, Key="first", Body=body))
    got, read_s = timed(lambda: s3_f2.get_object(Bucket=bucket, Key="first")["Body"].read())
    assert got == body
    print(f"\nPUT through a follower: warm {warm_s * 1000:.0f} ms, first after {IDLE_S:.0f} s "
          f"idle {first_s * 1000:.0f} ms; first GET through the other follower "
          f"{read_s * 1000:.0f} ms")
    assert first_s < PROMPT_PUT_S, f"first PUT after idle took {first_s:.3f} s"
    assert read_s < PROMPT_PUT_S, f"first GET after idle took {read_s:.3f} s"


def test_repair_right_after_restart_sees_writes_it_missed(node_factory):
    nodes, reports = cluster.form(node_factory, "frep")
    leader, (behind, other) = roles(nodes, reports)
    founder = nodes[0]
    s3 = leader.client(founder.access_key, founder.secret_key)
    bucket = f"rep-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)

    behind.stop()
    before = set(harness.shard_files(other.data_dir))
    # Small objects are two replicas; those placed away from the stopped node are acknowledged
    # with both, the others are refused (their floor needs the stopped node).
    written = []
    for i in range(REPAIR_ATTEMPTS_MAX):
        try:
            s3.put_object(Bucket=bucket, Key=f"k{i}", Body=f"body {i}".encode())
        except Exception as e:  # noqa: BLE001 - any refusal just means "placed on the down node"
            assert harness.http_status(e) == 503, e
            continue
        written.append(f"k{i}")
        if len(written) == REPAIR_OBJECTS:
            break
    assert len(written) == REPAIR_OBJECTS, f"only {len(written)} writes acknowledged"
    # Many more metadata entries, so that catching up takes the restarted node a while.
    filler_start = time.monotonic()
    for i in range(FILLER_ENTRIES):
        s3.create_bucket(Bucket=f"{bucket}-f{i}")
    print(f"\n{FILLER_ENTRIES} filler entries written in {time.monotonic() - filler_start:.1f} s")
    lost = sorted(set(harness.shard_files(other.data_dir)) - before)
    assert lost, "no shard of the new objects landed on the other follower"
    for p in lost:
        p.unlink()

    # Repair as soon as the restarted node answers at all, while it is still catching up.
    behind.start(wait=False)
    deadline = time.monotonic() + REPAIR_WAIT_S
    while True:
        r = harness.run_cli(["repair", "--json", "--data", str(behind.data_dir)], timeout=120)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        assert behind.running(), behind.stderr_tail()
        time.sleep(0.02)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["objects"] == len(written), report
    assert report["shards_rebuilt"] == len(lost), report
    assert len(set(harness.shard_files(other.data_dir)) - before) == len(lost)
    for k in written:
        n = int(k[1:])
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == f"body {n}".encode()
