"""A `kill -9` at any point of a node's very first start leaves a data dir that starts.

Before, a crash between writing the certificates and `node.json` left a directory that every
later start refused ("is not initialised and not empty"), so a unit with Restart=on-failure
looped for ever. Here a fresh data dir is started and killed with SIGKILL after a random delay
spread over the whole first start (certificates, credentials, `node.json`, the metadata store,
the first election), then started again: every time it must become ready, serve S3 with the
credentials in its data dir, and report itself as a one-node cluster. Part of the tries kill
a joiner during its join instead; it must then start again (with a fresh token if the first
one was spent), be a member and serve S3.
"""

from __future__ import annotations

import random
import time

import cluster
import harness

FOUNDER_TRIES = 24
JOINER_TRIES = 4


def measure_first_start(node_factory) -> float:
    t0 = time.monotonic()
    node = node_factory("probe")
    took = time.monotonic() - t0
    node.stop()
    return took


def test_kill9_during_first_start_always_restarts(node_factory, tmp_path):
    ready_s = measure_first_start(node_factory)
    rnd = random.Random(20261207)
    # Spread the kills over the whole first start, with extra weight on its first moments.
    delays = [rnd.uniform(0.0, 0.15) for _ in range(4)]
    delays += [rnd.uniform(0.0, ready_s * 1.2) for _ in range(FOUNDER_TRIES - 4)]
    for i, delay in enumerate(delays):
        node = node_factory(f"first-{i}", start=False)
        node.start(wait=False)
        time.sleep(delay)
        node.kill9()
        node.start()
        client = node.client()
        bucket = f"first-{i}"
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="k", Body=b"hello")
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"hello"
        report = cluster.status(node)
        assert report is not None and len(report["members"]) == 1, report
        assert not (node.data_dir / "first-start").exists() or node.running()
        node.stop()


def test_kill9_during_a_join_always_restarts(node_factory):
    founder = node_factory("founder")
    rnd = random.Random(7)
    for i in range(JOINER_TRIES):
        token = cluster.mint(founder)
        joiner = node_factory(f"join-{i}", start=False, token=token)
        joiner.start(wait=False)
        time.sleep(rnd.uniform(0.0, 1.5))
        joiner.kill9()
        try:
            joiner.start()
        except (harness.NodeExited, TimeoutError):
            # The cut-short join spent the token: a fresh one must work on the same dir. Its
            # admission still holds the old cluster address, so the retry takes another one
            # (a join at an address the cluster already gave a node is refused).
            joiner.token = cluster.mint(founder)
            joiner.cluster_port = harness.free_ports(1)[0]
            joiner.start()
        # Serving does not wait for the leader's steward to add the node (once a second, one
        # admission at a time, earlier cut-short joins included): it becomes a member shortly.
        deadline = time.monotonic() + 60
        while True:
            report = cluster.status(joiner)
            assert report is not None, joiner.stderr_tail()
            if report["node_id"] in {m["node_id"] for m in report["members"]}:
                break
            assert time.monotonic() < deadline, report
            time.sleep(0.5)
        client = joiner.client(founder.access_key, founder.secret_key)
        bucket = f"join-{i}"
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.put_object(Bucket=bucket, Key="k", Body=b"joined")
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"joined"
