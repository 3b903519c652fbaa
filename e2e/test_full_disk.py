"""A full disk degrades a node; it never wedges it.

Before, once a node's disk filled, the next metadata write hit ENOSPC, the Raft core quit, and
from then on every S3 call — GETs of acknowledged objects, LIST, and the DELETEs that would free
space — answered 503 or 500 while `/ready` said ready; a restart on the full disk failed.

Here one node runs on its own small tmpfs with `--min-free 12MiB`. 1 MiB objects are written
until the node refuses: the refusal is 507 InsufficientStorage, and then every acknowledged
object still reads back, the listing is whole, `/ready` answers 200 and deletes work. Deleting
objects brings writes back without a restart. Filled again and restarted on the full disk, the
node starts, serves reads (the time until the first read is printed) and takes deletes.
Needs root (it mounts a tmpfs); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests
from botocore.exceptions import ClientError

import harness

DISK_MIB = 48
MIN_FREE = "12MiB"
OBJECT_BYTES = 1 << 20
WRITES_MAX = 80


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); run as root")
    try:
        yield mnt
    finally:
        # Nodes living on the tmpfs stop first (a failed test may have left them running).
        for node in list(harness.ACTIVE_NODES):
            if str(node.data_dir).startswith(str(mnt)):
                node.stop()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(client, bucket: str, start: int, kept: dict[str, bytes]) -> ClientError:
    """PUTs 1 MiB objects until one is refused; returns the refusal."""
    for i in range(start, start + WRITES_MAX):
        body = os.urandom(OBJECT_BYTES)
        key = f"fill/{i:04d}"
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        except ClientError as e:
            return e
        kept[key] = body
    raise AssertionError(f"{WRITES_MAX} MiB written to a {DISK_MIB} MiB disk without a refusal")


def put_once_room(client, bucket: str, key: str, body: bytes, kept: dict[str, bytes],
                  timeout: float = 20.0) -> None:
    """PUTs `key`, retrying while the node still finds its disk below the reserve."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
            kept[key] = body
            return
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def assert_serving(node, client, bucket: str, kept: dict[str, bytes]) -> None:
    for key, body in kept.items():
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    listed = {o["Key"] for o in harness.list_all_keys(client, bucket)}
    assert listed == set(kept)
    assert requests.get(node.admin_url + "/ready", timeout=5).status_code == 200


def test_full_disk_refuses_writes_keeps_reads_and_deletes(node_factory, small_disk):
    node = node_factory("full", data_dir=small_disk / "data", extra_args=["--min-free", MIN_FREE])
    client = node.client(retries={"max_attempts": 1})
    bucket = "filling"
    client.create_bucket(Bucket=bucket)
    kept: dict[str, bytes] = {}

    refusal = fill(client, bucket, 0, kept)
    assert harness.http_status(refusal) == 507, refusal.response
    assert harness.error_code(refusal) == "InsufficientStorage"
    assert len(kept) >= 10
    assert_serving(node, client, bucket, kept)

    # Deletes free space, and writes come back by themselves.
    for key in sorted(kept)[:12]:
        client.delete_object(Bucket=bucket, Key=key)
        del kept[key]
    put_once_room(client, bucket, "after-delete", b"back", kept)
    assert_serving(node, client, bucket, kept)

    # Full again, then a restart on the full disk: it starts and serves reads.
    fill(client, bucket, 1000, kept)
    node.stop()
    t0 = time.monotonic()
    node.start()
    client = node.client(retries={"max_attempts": 1})
    first = next(iter(kept))
    while True:
        try:
            client.get_object(Bucket=bucket, Key=first)["Body"].read()
            break
        except ClientError:
            if time.monotonic() - t0 > 60:
                raise
            time.sleep(0.2)
    print(f"\nrestart on a full disk: first read served {time.monotonic() - t0:.2f}s after start")
    assert_serving(node, client, bucket, kept)
    # The headroom released at start lets a few more writes in; then the reserve holds again.
    refusal = fill(client, bucket, 2000, kept)
    assert harness.http_status(refusal) == 507, refusal.response
    victim = sorted(kept)[0]
    client.delete_object(Bucket=bucket, Key=victim)
    del kept[victim]
    assert_serving(node, client, bucket, kept)
    assert "panicked" not in node.stderr()
    node.stop()


def test_disk_filled_by_something_else_keeps_reads_and_deletes(node_factory, small_disk):
    """Another process fills the disk to the last byte: the node releases its metadata headroom,
    keeps serving reads and deletes, stays ready, and takes writes again once the space is back."""
    node = node_factory("ballast", data_dir=small_disk / "data",
                        extra_args=["--min-free", MIN_FREE])
    client = node.client(retries={"max_attempts": 1})
    bucket = "ballast"
    client.create_bucket(Bucket=bucket)
    kept = {f"k/{i}": os.urandom(100_000) for i in range(8)}
    for key, body in kept.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    time.sleep(1.5)  # the monitor has taken its headroom by now
    ballast = small_disk / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M"], capture_output=True)
    time.sleep(2.5)  # a tick or two: the headroom is released
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="no-room", Body=b"x" * 1000)
    assert harness.http_status(refused.value) == 507
    assert_serving(node, client, bucket, kept)
    for key in ["k/0", "k/1", "k/2"]:
        client.delete_object(Bucket=bucket, Key=key)
        del kept[key]
    assert_serving(node, client, bucket, kept)
    assert node.running()

    ballast.unlink()
    put_once_room(client, bucket, "room-again", b"y" * 1000, kept)
    assert_serving(node, client, bucket, kept)
    node.stop()


def test_a_full_member_is_named_and_the_cluster_keeps_serving(node_factory, small_disk, tmp_path):
    """Three nodes (2+1: every write needs all three homes); one member's disk is full. A write
    through another node is refused with 503 SlowDown naming the full member, reads go on, and
    writes come back once its disk has room again."""
    import cluster

    args = ["--min-free", MIN_FREE]
    founder = node_factory("fa", extra_args=args)
    b = node_factory("fb", token=cluster.mint(founder), extra_args=args)
    full = node_factory("fc", token=cluster.mint(founder), data_dir=small_disk / "data",
                        extra_args=args)
    nodes = [founder, b, full]
    reports = cluster.wait_agreed(nodes)
    full_id = next(r["node_id"] for n, r in zip(nodes, reports) if n is full)
    client = founder.client(retries={"max_attempts": 1})
    client.create_bucket(Bucket="members")
    before = os.urandom(OBJECT_BYTES)
    client.put_object(Bucket="members", Key="before", Body=before)

    ballast = small_disk / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M"], capture_output=True)
    time.sleep(2.5)
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket="members", Key="blocked", Body=os.urandom(OBJECT_BYTES))
    assert harness.http_status(refused.value) == 503
    assert harness.error_code(refused.value) == "SlowDown"
    message = refused.value.response.get("Error", {}).get("Message", "")
    assert full_id in message and "reserve" in message, message
    for n in nodes:
        c = n.client(founder.access_key, founder.secret_key)
        assert c.get_object(Bucket="members", Key="before")["Body"].read() == before

    ballast.unlink()
    put_once_room(client, "members", "after", b"z" * OBJECT_BYTES, {})
    assert client.get_object(Bucket="members", Key="after")["Body"].read() == b"z" * OBJECT_BYTES
    for n in nodes:
        n.stop()
