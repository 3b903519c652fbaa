"""A member that is down does not flood the others' logs.

Before, openraft logged a WARN and an ERROR for every retry to a stopped member — several
lines a second per peer for as long as it was down — so a failover buried everything else.
Here one member of three is stopped for a few seconds while clients read through the leader
(each read confirms its leadership with every voter, the stopped one too): the leader's log
gains no ERROR line at all, only a bounded number of lines in total, and the stopped member
rejoins when started again.
"""

from __future__ import annotations

import time

import cluster

DOWN_SECONDS = 6.0
LINES_MAX = 40


def test_a_stopped_member_does_not_flood_the_leaders_log(node_factory):
    nodes, reports = cluster.form(node_factory, "quiet", 3)
    leader_id = reports[0]["leader"]
    leader = cluster.by_id(nodes, reports)[leader_id]
    victim = next(n for n in nodes if n is not leader)
    creds = nodes[0]
    client = leader.client(creds.access_key, creds.secret_key)
    client.create_bucket(Bucket="quiet")
    client.put_object(Bucket="quiet", Key="k", Body=b"v")
    before = leader.stderr().count("\n")
    victim.stop()
    # Reads through the leader confirm its leadership with every voter, the stopped one too.
    deadline = time.monotonic() + DOWN_SECONDS
    reads = 0
    while time.monotonic() < deadline:
        assert client.get_object(Bucket="quiet", Key="k")["Body"].read() == b"v"
        reads += 1
    assert reads >= 20
    log = leader.stderr()
    new_lines = log.splitlines()[before:]
    errors = [line for line in new_lines if " ERROR " in line or "\x1b[31mERROR" in line]
    assert not errors, "\n".join(errors[:10])
    assert len(new_lines) <= LINES_MAX, "\n".join(new_lines[:60])
    victim.start()
    cluster.wait_agreed(nodes)
