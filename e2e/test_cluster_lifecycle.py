"""The operator's lifecycle of a multi-node cluster, with real processes over loopback mTLS.

- The leader is killed (`kill -9`) while a client writes through a follower: a new leader
  serves within a few seconds, every acknowledged write survives, `hamster status` shows the
  dead member as unreachable, and the old leader restarts from disk and rejoins.
- Every node stops cleanly and restarts from disk with identical metadata.
- Seven nodes end up with exactly five voters; when a voter dies for good, a caught-up learner
  takes its place.
- Quorum loss: `hamster recover` refuses on a running node and while a quorum is reachable,
  and otherwise lets the surviving node lead alone with everything it held.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import requests

import cluster
import harness

# "A new leader serves within a few seconds" (elections time out in 0.3-0.6 s).
FAILOVER_MAX = 10.0


def keys_on(node, ak, sk, bucket) -> list[str]:
    s3 = node.client(ak, sk)
    return [o["Key"] for o in harness.list_all_keys(s3, bucket)]


def write_until(s3, bucket, stop: threading.Event, acked: list, errors: list) -> None:
    """Writes small objects one after another until `stop`; each key is retried until it is
    acknowledged (or the test ends), so every acknowledged key is recorded in order."""
    i = 0
    while not stop.is_set():
        key = f"w/{i:06d}"
        while not stop.is_set():
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=f"body {i}".encode())
                acked.append((key, time.monotonic()))
                break
            except Exception as e:  # noqa: BLE001 - every failure is retried and recorded
                errors.append((key, time.monotonic(), repr(e)[:200]))
                time.sleep(0.05)
        i += 1


def test_leader_killed_mid_workload_fails_over_and_rejoins(node_factory):
    nodes, reports = cluster.form(node_factory, "fail")
    members = cluster.by_id(nodes, reports)
    old_id = reports[0]["leader"]
    leader = members[old_id]
    follower = next(n for n in nodes if n is not leader)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    bucket = f"fail-{uuid.uuid4().hex[:10]}"
    s3 = follower.client(ak, sk)
    s3.create_bucket(Bucket=bucket)

    stop = threading.Event()
    acked: list = []
    errors: list = []
    writer = threading.Thread(target=write_until, args=(s3, bucket, stop, acked, errors))
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= 20, f"the workload did not get going: {errors[-3:]}"
        killed_at = time.monotonic()
        leader.kill9()
        # Writes resume once a new leader serves.
        deadline = killed_at + FAILOVER_MAX + 5
        while time.monotonic() < deadline and not (acked and acked[-1][1] > killed_at + 0.01):
            time.sleep(0.05)
        resumed = [t for _, t in acked if t > killed_at]
        assert resumed, f"no write acknowledged after the leader died: {errors[-3:]}"
        gap = resumed[0] - killed_at
        assert gap < FAILOVER_MAX, f"writes resumed only after {gap:.1f}s"
        time.sleep(0.5)
    finally:
        stop.set()
        writer.join(30)

    survivors = [n for n in nodes if n is not leader]
    reports = [cluster.status(n) for n in survivors]
    new_leader = {r["leader"] for r in reports if r}
    assert len(new_leader) == 1 and old_id not in new_leader, reports
    # Status on a survivor shows the dead member as unreachable.
    text = harness.run_cli(["status", "--data", str(survivors[0].data_dir)])
    assert text.returncode == 0, text.stderr
    assert "unreachable" in text.stdout and "Leader" in text.stdout, text.stdout

    want = sorted(k for k, _ in acked)
    for n in survivors:
        got = keys_on(n, ak, sk, bucket)
        assert set(want) <= set(got), f"{n.name} lost acknowledged writes"

    # The old leader restarts from disk and rejoins with everything.
    leader.start()
    cluster.wait_agreed(nodes)
    got = keys_on(leader, ak, sk, bucket)
    assert set(want) <= set(got), "the restarted leader is missing acknowledged writes"


def test_all_nodes_stop_cleanly_and_restart_with_identical_metadata(node_factory):
    nodes, _ = cluster.form(node_factory, "restart")
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    written: dict[str, list[str]] = {}
    for i, n in enumerate(nodes):
        s3 = n.client(ak, sk)
        bucket = f"restart-{i}-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        keys = [f"k/{j:03d}" for j in range(15)]
        for k in keys:
            s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
        s3.delete_object(Bucket=bucket, Key=keys[0])
        written[bucket] = keys[1:]

    for n in nodes:
        code, killed = n.stop()
        assert (code, killed) == (0, False), f"{n.name} did not stop cleanly"
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready()
    cluster.wait_agreed(nodes)

    views = []
    for n in nodes:
        s3 = n.client(ak, sk)
        buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
        views.append({b: keys_on(n, ak, sk, b) for b in buckets})
    assert views[0] == {b: sorted(k) for b, k in written.items()}
    assert all(v == views[0] for v in views), "replicas differ after the restart"


def test_seven_nodes_keep_five_voters_and_replace_a_dead_one(node_factory):
    args = ["--voter-down-after", "3s"]
    founder = node_factory("seven-0", no_s3=True, extra_args=args)
    nodes = [founder]
    for i in range(1, 7):
        nodes.append(node_factory(f"seven-{i}", no_s3=True, token=cluster.mint(founder),
                                  extra_args=args))
    reports = cluster.wait_agreed(nodes, voters=5, timeout=90)
    roles = {m["node_id"]: m["role"] for m in reports[0]["members"]}
    assert sorted(roles.values()).count("voter") == 5 and len(roles) == 7

    # A voter other than the leader dies for good.
    leader_id = reports[0]["leader"]
    members = cluster.by_id(nodes, reports)
    victim_id = next(i for i, r in roles.items() if r == "voter" and i != leader_id)
    victim = members[victim_id]
    victim.kill9()
    survivors = [n for n in nodes if n is not victim]

    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        last = cluster.status(survivors[0])
        if last:
            voters = {m["node_id"] for m in last["members"] if m["role"] == "voter"}
            if len(voters) == 5 and victim_id not in voters:
                break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the dead voter was not replaced: {last}")
    # It stays a member, as a learner that can catch up when it returns.
    assert any(m["node_id"] == victim_id and m["role"] == "learner" for m in last["members"])


def test_recover_from_quorum_loss(node_factory):
    nodes, reports = cluster.form(node_factory, "recover")
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    a, b, c = nodes
    bucket = f"recover-{uuid.uuid4().hex[:8]}"
    a.client(ak, sk).create_bucket(Bucket=bucket)
    b.client(ak, sk).put_object(Bucket=bucket, Key="before", Body=b"kept")

    # Refused while the node runs.
    r = harness.run_cli(["recover", "--data", str(c.data_dir)])
    assert r.returncode != 0 and "stop it first" in r.stderr, r.stderr
    # Refused while a quorum of voters is reachable.
    c.stop()
    r = harness.run_cli(["recover", "--data", str(c.data_dir)])
    assert r.returncode != 0 and "quorum" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr

    # The majority dies for good; c recovers and leads alone with what it held.
    a.kill9()
    b.kill9()
    # Dropping members needs the operator's explicit word that they will be wiped.
    r = harness.run_cli(["recover", "--data", str(c.data_dir)])
    assert r.returncode != 0 and "--i-understand-dropped-nodes-must-be-wiped" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = harness.run_cli(["recover", "--data", str(c.data_dir),
                         "--i-understand-dropped-nodes-must-be-wiped"])
    assert r.returncode == 0, r.stderr
    assert "only voter" in r.stdout, r.stdout
    c.start()
    s = cluster.status(c)
    assert s["leader"] == s["node_id"]
    assert [m["node_id"] for m in s["members"]] == [s["node_id"]]
    # The dropped nodes stay dropped: their old admissions were forgotten with the recovery
    # (the steward acts once a second).
    time.sleep(2.5)
    s = cluster.status(c)
    assert [m["node_id"] for m in s["members"]] == [s["node_id"]], s["members"]
    s3 = c.client(ak, sk)
    assert keys_on(c, ak, sk, bucket) == ["before"]
    s3.put_object(Bucket=bucket, Key="after", Body=b"new")
    assert keys_on(c, ak, sk, bucket) == ["after", "before"]

    # A rebooted machine restarts the dropped nodes on their old data dirs anyway. They still
    # hold the old membership and could elect each other; instead the recovered node refuses
    # them (they are of an older cluster epoch) and each stops with a clear line, exit 78, and
    # stays stopped. The recovered node keeps serving, without a panic or a rewritten log.
    a.start(wait=False)
    b.start(wait=False)
    for dropped in (a, b):
        try:
            dropped.proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{dropped.name} kept running after the recover:\n"
                                 f"{dropped.stderr_tail()}")
        harness._LIVE.pop(dropped.proc.pid, None)
        assert dropped.proc.returncode == 78, dropped.stderr_tail()
        assert "dropped from its cluster by `hamster recover`" in dropped.stderr()
    assert c.running()
    requests.get(c.admin_url + "/ready", timeout=5).raise_for_status()
    s3.put_object(Bucket=bucket, Key="later", Body=b"newer")
    assert keys_on(c, ak, sk, bucket) == ["after", "before", "later"]
    # ("before" may have had both its copies on the dropped nodes: its bytes went with them.)
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"new"
    assert s3.get_object(Bucket=bucket, Key="later")["Body"].read() == b"newer"
    s = cluster.status(c)
    assert s["leader"] == s["node_id"]
    assert [m["node_id"] for m in s["members"]] == [s["node_id"]], s["members"]
    # Started again, a dropped node refuses at once.
    a.start(wait=False)
    a.proc.wait(30)
    harness._LIVE.pop(a.proc.pid, None)
    assert a.proc.returncode == 78 and "Wipe its data dir" in a.stderr(), a.stderr_tail()
    assert "panicked" not in c.stderr()
