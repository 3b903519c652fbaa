"""Supervision, `/health` and `/ready` as an operator sees them (issue 17, "Supervision").

The first two tests need the test-only fault hooks, so they run `hamster` built with the
`fault-injection` feature (the `fault_bin` fixture builds it once; set HAMSTER_FAULT_BIN to use a
ready one). That build serves `POST /fault/panic/{actor}` (the named supervised actor panics in a
message handler) and `POST /fault/raft-core` (the Raft core panics on its next log append) on the
admin port.

- Every supervised actor, told to panic, is restarted in place: its restart is counted once in
  `hamster_actor_restarts_total{actor}` and logged once, `/health` is 200 again, and the node
  serves S3 reads and writes as before, with the objects written before the panic intact.
- A Raft core that stops cannot be restarted inside the process: `/ready` answers 503 naming
  the stopped core while the process is still up, and the process then exits with status 70
  (so systemd's `Restart=on-failure` brings it back); started again, it serves what it stored.
- `/ready` tells whether a node can serve reads right now: a leader whose two followers are
  down (it cannot confirm its commit index with a quorum) and a follower whose leader and other
  peer are down both answer 503, and both are ready again once the members are back.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import cluster
import harness

# Exit status of a node whose metadata core stopped (EX_SOFTWARE), as src/serve.rs defines it.
CORE_STOPPED_EXIT = 70
# A supervised actor is restarted after at most a few seconds of back-off.
RESTART_WAIT = 20.0
# An election (0.3-0.6 s timeouts) and the readiness probe's bounded wait.
UNREADY_WAIT = 20.0
# Building the feature binary from a warm target dir recompiles two crates.
BUILD_TIMEOUT = 1800
SUPERVISED = ["raft_node", "layout_manager", "steward", "watermark_keeper", "space_monitor",
              "reclaimer", "liveness", "scrubber"]


def _cargo(args: list[str], target: Path) -> None:
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", *args], cwd=harness.REPO_ROOT, env=env, check=True,
                   timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def fault_bin() -> str:
    """`hamster` built with the fault hooks, as `<target>/debug/hamster-fault` next to the
    binary under test. Cargo keeps both feature sets built, so after building the feature
    binary under the usual name, copying it aside and building the default again, the default
    `hamster` is back as it was at the cost of a relink."""
    given = os.environ.get("HAMSTER_FAULT_BIN")
    if given:
        return given
    default = Path(harness.hamster_bin())
    target = default.parent.parent
    out = default.parent / "hamster-fault"
    try:
        _cargo(["build", "--features", "fault-injection", "--bin", "hamster"], target)
        shutil.copy2(default, out)
    finally:
        _cargo(["build", "--bin", "hamster"], target)
    return str(out)


@pytest.fixture
def faulty(fault_bin, monkeypatch):
    """Nodes made after this start the fault-hook build."""
    monkeypatch.setenv("HAMSTER_BIN", fault_bin)
    return fault_bin


def restarts(node) -> dict[str, float]:
    out = {}
    for m in re.finditer(r'^hamster_actor_restarts_total\{actor="([a-z_]+)"\} (\S+)$',
                         node.metrics_text(), re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def get(node, path: str) -> requests.Response:
    return requests.get(node.admin_url + path, timeout=10)


def wait_status(node, path: str, code: int, timeout: float) -> requests.Response:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = get(node, path)
            if last.status_code == code:
                return last
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{node.name}{path} did not answer {code} within {timeout}s; last: "
                         f"{None if last is None else (last.status_code, last.text)}")


def test_a_panicking_actor_is_restarted_counted_and_the_node_serves_again(node_factory, faulty):
    node = node_factory("sup")
    s3 = node.client()
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="before", Body=b"written before any panic")
    assert get(node, "/health").status_code == 200
    assert restarts(node) == {a: 0.0 for a in SUPERVISED}, "every actor's series starts at 0"

    for n, actor in enumerate(SUPERVISED, start=1):
        r = requests.post(f"{node.admin_url}/fault/panic/{actor}", timeout=10)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + RESTART_WAIT
        while restarts(node).get(actor, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        counted = restarts(node)
        assert counted[actor] == 1, f"{actor}: {counted}"
        assert sum(counted.values()) == n, f"only {actor} restarted: {counted}"
        wait_status(node, "/health", 200, RESTART_WAIT)
        assert node.running()
        body = s3.get_object(Bucket="kept", Key="before")["Body"].read()
        assert body == b"written before any panic"
        s3.put_object(Bucket="kept", Key=f"after-{actor}", Body=actor.encode())
        assert s3.get_object(Bucket="kept", Key=f"after-{actor}")["Body"].read() == actor.encode()
    assert get(node, "/ready").status_code == 200

    # One log line per restart, naming the actor.
    plain = re.sub(r"\x1b\[[0-9;]*m", "", node.stderr())
    lines = [l for l in plain.splitlines() if "actor failed; restarting it" in l]
    assert len(lines) == len(SUPERVISED), lines
    for actor in SUPERVISED:
        named = [l for l in lines if re.search(rf'actor="?{actor}"?( |$)', l)]
        assert len(named) == 1, (actor, lines)

    r = requests.post(f"{node.admin_url}/fault/panic/nobody", timeout=10)
    assert r.status_code == 404 and "raft_node" in r.text


def test_a_stopped_raft_core_turns_unready_then_exits_non_zero(node_factory, faulty):
    node = node_factory("core")
    s3 = node.client(connect_timeout=3, read_timeout=20)
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="before", Body=b"stored before the core stopped")
    assert get(node, "/ready").status_code == 200

    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll_ready():
        while not stop.is_set():
            try:
                r = requests.get(node.admin_url + "/ready", timeout=3)
                seen.append((r.status_code, r.text.strip()))
            except requests.RequestException:
                pass
            time.sleep(0.05)

    poller = threading.Thread(target=poll_ready, daemon=True)
    poller.start()
    try:
        r = requests.post(f"{node.admin_url}/fault/raft-core", timeout=10)
        assert r.status_code == 200, r.text
        # The next write reaches the log append, where the core panics.
        with pytest.raises(Exception):
            s3.put_object(Bucket="kept", Key="never", Body=b"x")
        node.proc.wait(30)
    finally:
        stop.set()
        poller.join(10)
    assert node.proc.returncode == CORE_STOPPED_EXIT, node.stderr_tail()
    unready = [(c, t) for c, t in seen if c == 503 and "metadata core stopped" in t]
    assert unready, f"/ready never said the core stopped before the exit: {seen[-10:]}"
    assert "the metadata core stopped" in node.stderr()

    # As systemd would: started again, it serves what it stored.
    node.start()
    s3 = node.client()
    assert s3.get_object(Bucket="kept", Key="before")["Body"].read() == \
        b"stored before the core stopped"


def test_ready_is_false_without_a_quorum_and_true_once_members_return(node_factory):
    nodes, reports = cluster.form(node_factory, "ready")
    leader_id = reports[0]["leader"]
    by_id = cluster.by_id(nodes, reports)
    leader = by_id[leader_id]
    followers = [n for n in nodes if n is not leader]
    for n in nodes:
        wait_status(n, "/ready", 200, UNREADY_WAIT)

    # The leader alone: it still believes it leads, but no quorum confirms its commit index.
    for f in followers:
        f.stop()
    r = wait_status(leader, "/ready", 503, UNREADY_WAIT)
    assert "leader" in r.text, r.text
    for f in followers:
        f.start()
    wait_status(leader, "/ready", 200, UNREADY_WAIT * 3)

    # A follower alone: its leader and the other member are gone.
    reports = cluster.wait_agreed(nodes)
    leader = cluster.by_id(nodes, reports)[reports[0]["leader"]]
    survivor = next(n for n in nodes if n is not leader)
    others = [n for n in nodes if n is not survivor]
    for n in others:
        n.stop()
    r = wait_status(survivor, "/ready", 503, UNREADY_WAIT)
    assert "leader" in r.text, r.text
    assert get(survivor, "/health").status_code == 200, "alive, just not ready"
    for n in others:
        n.start()
    wait_status(survivor, "/ready", 200, UNREADY_WAIT * 3)
    s3 = survivor.client(nodes[0].access_key, nodes[0].secret_key)
    s3.create_bucket(Bucket="back")
    assert any(b["Name"] == "back" for b in s3.list_buckets()["Buckets"])
