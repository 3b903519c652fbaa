"""Liveness as an operator sees it (issue 17: "Liveness detector actor", "Logs that help").

One member of five is killed while a client keeps reading and writing through the Raft leader
for DRIVE_SECONDS. The leader's log must report the member down exactly once, and its WARN and
ERROR lines stay under LINES_PER_MINUTE_MAX a minute: before the detector every read and write
that met the dead home logged a line of its own (about 15,600 a minute). `/metrics` shows the
member's `hamster_member_up` at 0, and at 1 again once it is restarted, with one "up again"
line. A log written to a file carries no ANSI colour codes, and `--log-format json` gives one
parseable JSON object per line.

Five nodes, because the profile there (3+2, floor 4) still acknowledges writes with one home
dead, so the writes are real writes, acknowledged degraded, not refusals.
"""

from __future__ import annotations

import json
import re
import time

import cluster

NODES = 5
DRIVE_SECONDS = 40.0
# WARN and ERROR lines the leader may write in a minute with one member dead.
LINES_PER_MINUTE_MAX = 30
# Time for the detector to find a restarted member up again (it probes every second).
BACK_TIMEOUT = 30.0
SMALL = b"s" * 1024
LARGE = bytes(range(256)) * 1200  # 300 KiB: coded 3+2, not copied


def member_up(node, node_id: str) -> int | None:
    """The value of `hamster_member_up` for `node_id` on `node`'s /metrics, if present."""
    pattern = re.compile(r'^hamster_member_up\{node="' + node_id + r'"\} (\d+)$', re.M)
    m = pattern.search(node.metrics_text())
    return int(m.group(1)) if m else None


def wait_member_up(node, node_id: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = member_up(node, node_id)
        if last == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"hamster_member_up for {node_id} is {last}, not {want}, "
                         f"after {timeout}s")


def warn_or_error(lines: list[str]) -> list[str]:
    return [line for line in lines if " WARN " in line or " ERROR " in line]


def test_a_dead_member_is_reported_once_and_does_not_flood_the_log(node_factory):
    nodes, reports = cluster.form(node_factory, "live", NODES)
    leader_id = reports[0]["leader"]
    ids = {n: r["node_id"] for n, r in zip(nodes, reports)}
    leader = cluster.by_id(nodes, reports)[leader_id]
    victim = next(n for n in nodes if n is not leader)
    victim_id = ids[victim]
    client = leader.client(nodes[0].access_key, nodes[0].secret_key)
    client.create_bucket(Bucket="live")
    for i in range(4):
        client.put_object(Bucket="live", Key=f"small-{i}", Body=SMALL)
        client.put_object(Bucket="live", Key=f"large-{i}", Body=LARGE)
    wait_member_up(leader, victim_id, 1, BACK_TIMEOUT)
    before = len(leader.stderr().splitlines())

    victim.kill9()
    start = time.monotonic()
    reads = writes = 0
    while time.monotonic() - start < DRIVE_SECONDS:
        i = reads % 4
        assert client.get_object(Bucket="live", Key=f"small-{i}")["Body"].read() == SMALL
        assert client.get_object(Bucket="live", Key=f"large-{i}")["Body"].read() == LARGE
        reads += 2
        client.put_object(Bucket="live", Key=f"new-{writes}",
                          Body=LARGE if writes % 2 else SMALL)
        writes += 1
    elapsed = time.monotonic() - start
    assert reads >= 40 and writes >= 20, (reads, writes)
    assert member_up(leader, victim_id) == 0

    log = leader.stderr()
    assert "\x1b[" not in log, "colour codes in a log written to a file"
    new_lines = log.splitlines()[before:]
    noisy = warn_or_error(new_lines)
    bound = max(LINES_PER_MINUTE_MAX, int(LINES_PER_MINUTE_MAX * elapsed / 60.0))
    assert len(noisy) < bound, (f"{len(noisy)} WARN/ERROR lines in {elapsed:.0f}s "
                                f"({reads} reads, {writes} writes):\n" + "\n".join(noisy[:60]))
    down = [line for line in new_lines if f"node {victim_id} is down" in line]
    assert len(down) == 1, "\n".join(down) or "no line reports the dead member down"

    victim.start()
    wait_member_up(leader, victim_id, 1, BACK_TIMEOUT)
    back = [line for line in leader.stderr().splitlines()[before:]
            if f"node {victim_id} is up again" in line]
    assert len(back) == 1, "\n".join(back) or "no line reports the member back"
    for key in ("small-0", "large-0", "new-0", "new-1"):
        client.get_object(Bucket="live", Key=key)["Body"].read()


def test_json_log_format_gives_one_object_per_line(node_factory):
    node = node_factory("json", extra_args=["--log-format", "json"])
    client = node.client()
    client.create_bucket(Bucket="logs")
    client.put_object(Bucket="logs", Key="k", Body=b"v")
    assert client.get_object(Bucket="logs", Key="k")["Body"].read() == b"v"
    node.stop()
    lines = [line for line in node.stderr().splitlines() if line.strip()]
    assert lines, "the node logged nothing"
    for line in lines:
        record = json.loads(line)
        assert record["level"] in {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}, line
        assert "message" in record, line
    assert "\x1b[" not in node.stderr()
