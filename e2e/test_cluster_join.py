"""Joining a cluster with a token, end to end with real processes on loopback.

Node A founds a cluster; B and C start on empty data dirs with `--token` and become members.
Every member's `hamster status` then shows the same three members, leader and term; a bucket
made through A's S3 shows up through B's and C's S3 (they read their local replica, so the
check polls, bounded). A used token is refused with a clear one-line message and the refused
node exits nonzero. The cluster port refuses a plaintext client and a TLS client without a
certificate that asks for the control protocol, and keeps serving.

A join that would take a member's cluster address is refused with one line naming the clash,
and the token stays usable: the joiner cannot listen on an address a running member holds, and
the cluster refuses the address of a member that is down. A joiner whose advertised address
accepts no connection is refused too (the member reaches back before it admits).

A write through a follower's S3 is forwarded to the leader and committed, not bounced with
503; the follower answers once it has applied the write itself, so it reads it back at once.
Every node serves reads after catching up to the leader's commit index, so a write
acknowledged by one node is read back through any other at once, without polling.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import time
import uuid

import cluster
import harness


def test_three_nodes_join_and_agree(node_factory):
    (a, b, c), reports = cluster.form(node_factory, "join")
    # Addresses in the membership are the ones each node listens on.
    addrs = {m["node_id"]: m["cluster_addr"] for m in reports[0]["members"]}
    for node, r in zip((a, b, c), reports):
        assert addrs[r["node_id"]] == node.cluster_addr
        assert r["cluster_id"] == reports[0]["cluster_id"]

    # The joiners hold the CA key (so any member admits joiners) and their own key, both
    # 0600, and no credentials file of their own.
    for n in (b, c):
        for key in ("ca.key", "node.key"):
            assert (n.data_dir / "tls" / key).stat().st_mode & 0o777 == 0o600, key
        assert not (n.data_dir / "credentials").exists()

    # A bucket made through one node is visible through every other at once.
    bucket = f"join-{uuid.uuid4().hex[:12]}"
    a.client().create_bucket(Bucket=bucket)
    for n in (b, c):
        s3 = n.client(a.access_key, a.secret_key)
        names = [x["Name"] for x in s3.list_buckets()["Buckets"]]
        assert bucket in names, f"{n.name} does not list {bucket}: {names}"

    # A node that joined admits the next joiner (the founder need not be involved).
    d = node_factory("join-d", token=cluster.mint(c))
    cluster.wait_agreed([a, b, c, d])

    # A restart of a joined node ignores its token and rejoins as the member it is.
    b.restart()
    assert "ignored" in b.stderr()


def test_write_on_follower_is_forwarded(node_factory):
    nodes, reports = cluster.form(node_factory, "fwd")
    leader_id = reports[0]["leader"]
    members = cluster.by_id(nodes, reports)
    leader = members[leader_id]
    follower = next(n for nid, n in members.items() if nid != leader_id)
    ak, sk = nodes[0].access_key, nodes[0].secret_key

    bucket = f"fwd-{uuid.uuid4().hex[:12]}"
    key = "written/on-a-follower.txt"
    body = b"committed through the leader, readable here at once"
    s3 = follower.client(ak, sk)
    # No retries in the client: a 503 bounce would fail here.
    s3.create_bucket(Bucket=bucket)
    s3.head_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=body)

    # Read-your-writes on the node written to, without polling.
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == body
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == [key]

    # The leader has the metadata at once (the bytes stay on the follower until erasure
    # coding).
    lead = leader.client(ak, sk)
    lead.head_bucket(Bucket=bucket)
    keys = [o["Key"] for o in lead.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [key], f"the leader does not list {key}: {keys}"

    # A delete through the follower is forwarded too.
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_used_token_is_refused(node_factory):
    a = node_factory("used-a", no_s3=True)
    token = cluster.mint(a)
    node_factory("used-b", no_s3=True, token=token)
    late = node_factory("used-c", no_s3=True, token=token, start=False)
    late.start(wait=False)
    code = late.proc.wait(harness.CLI_TIMEOUT)
    assert code != 0
    err = late.stderr()
    assert "the join token was already used" in err, err
    last = [line for line in err.splitlines() if line.startswith("hamster:")]
    assert last and "hamster token" in last[-1], err
    assert not (late.data_dir / "node.json").exists()


def refusal_line(node) -> str:
    """The one `hamster:` line a refused joiner ends with, after it exited nonzero."""
    code = node.proc.wait(harness.CLI_TIMEOUT)
    assert code != 0, node.stderr()
    lines = [line for line in node.stderr().splitlines() if line.startswith("hamster:")]
    assert len(lines) == 1, node.stderr()
    return lines[0]


def test_join_at_a_members_cluster_address_is_refused(node_factory):
    """Issue 16: a join reusing a member's cluster address was admitted and left a phantom
    member that could not be removed. Now the join is refused before its token is used, so
    the membership stays as it was and the same token admits the node once corrected."""
    (a, b), reports = cluster.form(node_factory, "dup", n=2)
    b_id = reports[1]["node_id"]
    token = cluster.mint(a)
    c = node_factory("dup-c", no_s3=True, token=token, start=False)
    own_port = c.cluster_port

    # While b runs, its address is taken on this host: the joiner cannot listen there and
    # stops before it asks.
    c.cluster_port = b.cluster_port
    c.start(wait=False)
    line = refusal_line(c)
    assert b.cluster_addr in line and "--cluster-addr" in line, line
    assert "same token" in line, line

    # With b down, its address is free on this host, but the cluster still knows it as b's.
    b.stop()
    c.start(wait=False)
    line = refusal_line(c)
    assert b.cluster_addr in line and b_id in line and "--cluster-addr" in line, line
    assert not (c.data_dir / "node.json").exists()

    # Still exactly a and b, with nobody admitted behind them.
    b.start()
    cluster.wait_agreed([a, b])
    time.sleep(3)
    cluster.wait_agreed([a, b])

    # The same token admits the node at its own address, from the same data dir.
    c.cluster_port = own_port
    c.start()
    cluster.wait_agreed([a, b, c])


def fake_join(port: int, token: str, cluster_addr: str) -> dict:
    """Sends one join request as a joiner would, without listening anywhere, and returns the
    answer. The certificate request is a placeholder: the member judges where the joiner
    stands (its id, its address, whether it can be reached) before it reads the request."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["hamster-join/1"])
    request = {
        "token": token,
        "csr_pem": "placeholder",
        "node_id": uuid.uuid4().hex[:16].replace("0", "1"),
        "cluster_addr": cluster_addr,
        "zone": "default",
        "host": "e2e",
        "capacity_bytes": 1 << 30,
    }
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="cluster.hamster") as tls:
            tls.sendall(frame(request))
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
    (length,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + length])


def test_join_from_an_unreachable_address_is_refused(node_factory):
    """A joiner advertising an address where nothing listens would be a member nobody can
    reach: the member tries to connect back first and refuses, naming the address, and the
    token stays usable."""
    a = node_factory("reach-a", no_s3=True)
    token = cluster.mint(a)
    nowhere = f"127.0.0.1:{harness.free_ports(1)[0]}"
    answer = fake_join(a.cluster_port, token, nowhere)
    assert answer["type"] == "refused", answer
    message = answer["message"]
    assert nowhere in message and "--cluster-addr" in message and "\n" not in message, message

    b = node_factory("reach-b", no_s3=True, token=token)
    cluster.wait_agreed([a, b])


def frame(obj: dict) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def closed_without_answer(sock) -> bool:
    """Reads until the server closes: only nothing, a TLS alert record (0x15) or a connection
    error count as a refusal; a frame back would be an answer."""
    sock.settimeout(10)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, ConnectionError, OSError):
        pass
    return data == b"" or data[0] == 0x15


def refused_on_member_protocols(port: int, cert: tuple | None = None) -> None:
    """A TLS client (without a certificate, or with `cert`) asking for the control or Raft
    protocol is refused: in the handshake, or by a close without any answer."""
    for alpn in ("hamster-control/1", "hamster-raft/1"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(*cert)
        ctx.set_alpn_protocols([alpn])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            tls = ctx.wrap_socket(raw, server_hostname="cluster.hamster")
        except (ssl.SSLError, ConnectionError, OSError):
            raw.close()
            continue
        with tls:
            try:
                tls.sendall(frame({"type": "status"}))
            except (ssl.SSLError, ConnectionError, OSError):
                continue
            assert closed_without_answer(tls), alpn


def test_cluster_port_refuses_plaintext_and_certless_clients(node_factory):
    a = node_factory("refuse-a", no_s3=True)

    with socket.create_connection(("127.0.0.1", a.cluster_port), timeout=10) as s:
        s.sendall(frame({"type": "status"}))
        assert closed_without_answer(s)

    refused_on_member_protocols(a.cluster_port)

    assert a.running()
    r = cluster.status(a)
    assert r is not None and r["node_id"], "the node stopped answering after the refusals"


def test_cluster_port_refuses_a_certificate_from_another_cluster(node_factory, tmp_path):
    a = node_factory("other-a", no_s3=True)
    # Another cluster's node certificate: valid, but signed by a CA this cluster does not know.
    other = tmp_path / "other-cluster"
    r = harness.run_cli(["init", "--data", str(other)])
    assert r.returncode == 0, r.stderr
    tls_dir = other / "tls"

    refused_on_member_protocols(a.cluster_port, (tls_dir / "node.pem", tls_dir / "node.key"))

    assert a.running()
    r = cluster.status(a)
    assert r is not None and r["node_id"], "the node stopped answering after the refusal"
