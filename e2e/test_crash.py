"""An acknowledged PUT survives `kill -9`, and a crash never leaves a partial object or orphan.

Four writer threads PUT distinct keys with random sizes (1 B to 2 MiB) in a loop against one
node, recording every key they sent and, once the server answered 200, the key's SHA-256. After
about three seconds the server is killed with SIGKILL while writes are in flight, then restarted
on the same data directory. Afterwards:

- every acknowledged object reads back byte-identical;
- an object that was in flight at the kill is either absent or complete and byte-identical;
- a key that was never sent does not exist, and the listing holds only keys that were sent;
- the number of shard files under DIR/shards (outside tmp) equals the number of listed objects
  (one node: one shard file per object), and DIR/shards/tmp holds no leftovers.

The kill/restart cycle runs twice on the same directory, so recovery itself is crash-tested.
"""

from __future__ import annotations

import random
import threading
import time

from botocore.exceptions import ClientError

import harness

WRITERS = 4
MAX_SIZE = 2 * 1024 * 1024
WRITE_SECONDS = 3.0


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent: dict[str, str] = {}  # key -> sha256 of the body that was sent
        self.acked: set[str] = set()
        self.errors: list[str] = []

    def in_flight(self) -> set[str]:
        return set(self.sent) - self.acked


def writer(node, bucket, prefix, seed, ledger: Ledger, stop: threading.Event):
    rnd = random.Random(seed)
    # Short timeouts and no retries: once the server is gone the loop must end quickly.
    client = node.client(connect_timeout=3, read_timeout=20)
    n = 0
    while not stop.is_set():
        key = f"{prefix}/{n:05d}"
        n += 1
        size = rnd.choice([1, rnd.randint(1, 4096), rnd.randint(1, MAX_SIZE)])
        data = rnd.randbytes(size)
        with ledger.lock:
            ledger.sent[key] = harness.sha256(data)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:  # the kill: connection reset/refused, or a 5xx mid-shutdown
            with ledger.lock:
                ledger.errors.append(f"{key}: {type(e).__name__}: {e}")
            return
        with ledger.lock:
            ledger.acked.add(key)


def write_then_kill(node, bucket, cycle) -> Ledger:
    ledger = Ledger()
    stop = threading.Event()
    threads = [threading.Thread(target=writer,
                                args=(node, bucket, f"c{cycle}-w{i}", 1000 * cycle + i,
                                      ledger, stop), daemon=True)
               for i in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(WRITE_SECONDS)
    node.kill9()  # writers are mid-request: nothing is drained first
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer hung after the kill"
    return ledger


def check_after_restart(node, bucket, ledgers: list[Ledger]):
    client = node.client()
    listing = {o["Key"]: o for o in harness.list_all_keys(client, bucket)}
    sent = {}
    for ledger in ledgers:
        sent.update(ledger.sent)

    stray = set(listing) - set(sent)
    assert not stray, f"objects that were never sent: {sorted(stray)[:10]}"

    for ledger in ledgers:
        for key in sorted(ledger.acked):
            assert key in listing, f"acknowledged {key} lost after kill -9"
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert harness.sha256(body) == ledger.sent[key], f"acknowledged {key} corrupted"
        for key in sorted(ledger.in_flight()):
            if key in listing:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                assert harness.sha256(body) == ledger.sent[key], \
                    f"in-flight {key} is visible but not the bytes that were sent"
            else:
                try:
                    client.head_object(Bucket=bucket, Key=key)
                    raise AssertionError(f"{key} answers HEAD but is not listed")
                except ClientError as e:
                    assert harness.http_status(e) == 404

    # Keys just past the last one each writer sent were never sent.
    for ledger in ledgers:
        for prefix in {k.rsplit("/", 1)[0] for k in ledger.sent}:
            last = max(int(k.rsplit("/", 1)[1]) for k in ledger.sent
                       if k.startswith(prefix + "/"))
            for n in (last + 1, last + 2):
                try:
                    client.head_object(Bucket=bucket, Key=f"{prefix}/{n:05d}")
                    raise AssertionError(f"never-sent key {prefix}/{n:05d} exists")
                except ClientError as e:
                    assert harness.http_status(e) == 404

    # Shard files match the listing exactly once recovery has removed leftovers.
    deadline = time.monotonic() + 15
    while True:
        shards = harness.shard_files(node.data_dir)
        tmp = harness.tmp_shard_files(node.data_dir)
        if (len(shards) == len(listing) and not tmp) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not tmp, f"leftover temp shard files: {[p.name for p in tmp][:10]}"
    print(f"after restart: {len(listing)} objects listed, {len(shards)} shard files")
    assert len(shards) == len(listing), (
        f"{len(shards)} shard files for {len(listing)} objects "
        f"(orphans or missing shards); e.g. {[p.name for p in shards][:5]}")
    for p in shards:
        stem, part, index = p.name.rsplit(".", 2)
        assert len(stem) == 32 and all(c in "0123456789abcdef" for c in stem), p.name
        assert (part, index) == ("1", "0"), p.name
        fanout = p.relative_to(node.data_dir / "shards").parts[:-1]
        assert len(fanout) == 2 and all(len(d) == 2 for d in fanout), p


def test_kill_9_during_writes_twice(node_factory):
    node = node_factory("crash")
    bucket = "crash-test"
    node.client().create_bucket(Bucket=bucket)

    ledgers = []
    for cycle in (1, 2):
        ledger = write_then_kill(node, bucket, cycle)
        ledgers.append(ledger)
        assert ledger.acked, f"cycle {cycle}: no write was acknowledged in {WRITE_SECONDS}s"
        print(f"cycle {cycle}: {len(ledger.sent)} sent, {len(ledger.acked)} acknowledged, "
              f"{len(ledger.in_flight())} in flight at the kill")
        node.start()
        check_after_restart(node, bucket, ledgers)
