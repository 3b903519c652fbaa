"""Join tokens, end to end through `hamster token` against a running node.

Proves that the printed token has the documented shape (prefix, URL-safe base64 body whose CRC
checks, version 1), that it names this node's cluster, pins the SHA-256 of this cluster's CA and
lists the node's cluster address, that its expiry follows `--ttl`, that every call mints a
different secret, that a bad lifetime is refused with one line before anything is asked of the
node, and that with no node running the CLI says to start one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import struct
import time
import zlib

import harness

PREFIX = "hamster-join-1."
HOUR_MS = 3_600_000


def token_cli(node, *args: str):
    return harness.run_cli(["token", *args, "--data", str(node.data_dir)])


def read_varint(body: bytes, at: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        b = body[at]
        at += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, at
        shift += 7


def read_str(body: bytes, at: int) -> tuple[str, int]:
    n, at = read_varint(body, at)
    return body[at:at + n].decode(), at + n


def decode(token: str) -> dict:
    """The token format, read independently of the Rust code."""
    assert token.startswith(PREFIX), token
    encoded = token[len(PREFIX):]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", encoded), token
    body = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    payload, crc = body[:-4], body[-4:]
    assert struct.unpack(">I", crc)[0] == zlib.crc32(payload)
    assert payload[0] == 1
    (expires_ms,) = struct.unpack(">Q", payload[1:9])
    ca_sha256, secret = payload[9:41], payload[41:73]
    cluster_id, at = read_str(payload, 73)
    count, at = read_varint(payload, at)
    addrs = []
    for _ in range(count):
        addr, at = read_str(payload, at)
        addrs.append(addr)
    assert at == len(payload)
    return dict(expires_ms=expires_ms, ca_sha256=ca_sha256, secret=secret,
                cluster_id=cluster_id, addrs=addrs)


def mint(node, *args: str) -> str:
    r = token_cli(node, *args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    # The hint is a whole command, this token in it, with the address the joiner must give.
    assert f"hamster serve --data /var/lib/hamster --cluster-addr ADDRESS:9400 --token '{lines[0]}'" \
        in r.stderr, r.stderr
    return lines[0]


def test_token_names_this_cluster_and_pins_its_ca(node_factory):
    node = node_factory("token-shape", no_s3=True)
    before_ms = time.time() * 1000
    token = mint(node)
    t = decode(token)

    ca_der = ssl.PEM_cert_to_DER_cert((node.data_dir / "tls" / "ca.pem").read_text())
    assert t["ca_sha256"] == hashlib.sha256(ca_der).digest()
    node_file = json.loads((node.data_dir / "node.json").read_text())
    assert t["cluster_id"] == node_file["cluster_id"]
    assert t["addrs"][0] == node.cluster_addr
    # Default lifetime: one hour from now.
    assert before_ms + HOUR_MS - 60_000 <= t["expires_ms"] <= time.time() * 1000 + HOUR_MS
    # The secret never lands on disk in the clear: the node keeps only its hash.
    secret_hex = t["secret"].hex()
    for path in node.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 64 << 20:
            assert secret_hex.encode() not in path.read_bytes(), path

    half = decode(mint(node, "--ttl", "30m"))
    assert abs(half["expires_ms"] - (time.time() * 1000 + HOUR_MS // 2)) < 60_000


def test_each_call_mints_a_different_token(node_factory):
    node = node_factory("token-fresh", no_s3=True)
    first, second = mint(node), mint(node)
    assert first != second
    assert decode(first)["secret"] != decode(second)["secret"]


def test_bad_lifetimes_are_refused_in_one_line(node_factory):
    node = node_factory("token-ttl", no_s3=True)
    for ttl, words in [("0s", "too short"), ("soon", "not a duration"),
                       ("1.5h", "not a duration"), ("8d", "too long")]:
        r = token_cli(node, "--ttl", ttl)
        assert r.returncode != 0, (ttl, r.stdout)
        assert r.stdout == "", (ttl, r.stdout)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, (ttl, r.stderr)
        assert words in lines[0], (ttl, lines[0])
    # The node is unharmed and still mints.
    decode(mint(node, "--ttl", "7d"))


def test_token_without_a_running_node_says_to_start_it(node_factory):
    node = node_factory("token-down", no_s3=True)
    node.stop()
    r = token_cli(node)
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "is `hamster serve` running?" in lines[0], lines[0]
