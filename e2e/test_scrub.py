"""The background scrubber as an operator sees it (issue 17, "Scrubber actor").

- A byte flipped in a shard file on disk is found and rebuilt with no command at all: within a
  bounded wait the file holds its original bytes again, `hamster status --json` counts the heal
  and every part written at full redundancy, the heal is logged once, `/metrics` shows it, and
  the object reads back whole.
- `hamster scrub --now` begins a pass at once even when passes are an hour apart;
  `--pause` holds every pass (a pass asked for with `--now` does not begin, the pass number
  stays put and status says paused) and `--resume` lets the asked-for pass run.

Before the scrubber existed nothing healed a shard unless an operator ran `hamster repair`, and
there was no `hamster scrub` verb nor a `scrub` object in `status`, so both tests fail there.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from pathlib import Path

import cluster
import harness

MIB = 1024 * 1024
# Passes every two seconds at a pace that hashes a test's few MiB at once.
FAST_SCRUB = ["--scrub-every", "2s", "--scrub-rate", "256MiB"]
# Passes an hour apart: only `hamster scrub --now` begins one during a test.
SLOW_SCRUB = ["--scrub-every", "1h", "--scrub-rate", "256MiB"]
# A few passes of a few MiB on a debug build, with one of them rebuilding a shard.
HEAL_WAIT = 60.0
# A pass asked for must begin within this (the scrubber looks every second).
BEGIN_WAIT = 30.0
# How long a paused scrubber is watched for a pass that should not begin.
PAUSE_WATCH = 6.0


def scrub(node, *args: str) -> dict:
    """`hamster scrub --json [args]` through `node`."""
    r = harness.run_cli(["scrub", "--json", "--data", str(node.data_dir), *args], timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def scrub_state(node) -> dict:
    """The `scrub` object of `hamster status --json`."""
    report = cluster.status(node)
    assert report is not None and report.get("scrub") is not None, report
    return report["scrub"]


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def all_stderr(nodes) -> str:
    return "".join(n.stderr() for n in nodes)


def flip_byte(path: Path) -> bytes:
    """Flips one bit in the middle of `path` (synced); answers the bytes it held before."""
    before = path.read_bytes()
    at = len(before) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([before[at] ^ 0x10]))
        f.flush()
        os.fsync(f.fileno())
    assert path.read_bytes() != before
    return before


def test_a_rotted_shard_heals_without_any_command(node_factory):
    nodes, _ = cluster.form(node_factory, "scrub", n=4, extra_args=FAST_SCRUB)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[1].client(ak, sk)
    bucket = f"scrub-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(17)
    objects = {}
    for i, size in enumerate([3 * MIB + 5, MIB, 400_000, 4096, 10]):
        data = rng.randbytes(size)
        s3.put_object(Bucket=bucket, Key=f"obj/{i}", Body=data)
        objects[f"obj/{i}"] = data
    # Every object is one part.
    parts = len(objects)

    # Let a pass see the objects whole first, so what follows is the scrubber's doing.
    deadline = time.monotonic() + HEAL_WAIT
    while time.monotonic() < deadline:
        last = scrub_state(nodes[2]).get("last")
        if last and last["tally"]["full"]["parts"] == parts:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no pass counted {parts} full parts: {scrub_state(nodes[2])}")
    healed_before = scrub_state(nodes[2])["healed_total"]
    assert healed_before == 0, scrub_state(nodes[2])

    # The largest shard (of the 3 MiB object), on whichever node holds it.
    victim = max((p for n in nodes for p in harness.shard_files(n.data_dir)),
                 key=lambda p: p.stat().st_size)
    before = flip_byte(victim)

    deadline = time.monotonic() + HEAL_WAIT
    while victim.read_bytes() != before:
        assert time.monotonic() < deadline, (
            f"{victim} still rotted after {HEAL_WAIT}s: {scrub_state(nodes[0])}")
        time.sleep(0.5)

    # The heal is in the replicated state, and a pass since counts every part full.
    deadline = time.monotonic() + HEAL_WAIT
    while True:
        state = scrub_state(nodes[3])
        last = state.get("last") or {}
        healed = state["healed_total"] - healed_before
        if healed >= 1 and last.get("tally", {}).get("full", {}).get("parts") == parts:
            break
        assert time.monotonic() < deadline, f"status never counted the heal: {state}"
        time.sleep(0.5)
    assert healed == 1, state
    tally = last["tally"]
    assert tally["degraded"]["parts"] == tally["at_risk"]["parts"] == 0, state
    assert tally["unrecoverable"]["parts"] == 0, state

    for key, data in objects.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key

    # Every node's gauge shows the heal (they follow the replicated state each second).
    for n in nodes:
        deadline = time.monotonic() + 10
        while (metric(n.metrics_text(), "hamster_scrub_shards_healed") or 0) < 1:
            assert time.monotonic() < deadline, f"{n.name}: hamster_scrub_shards_healed < 1"
            time.sleep(0.5)

    # Logged once, by the node that rebuilt it, though passes keep running every two seconds:
    # the shard's "rebuilding shard" line (the scrubber's own "scrubber rebuilt shards" may be
    # folded into it by the sweeps' log throttle).
    time.sleep(4)
    logs = all_stderr(nodes)
    assert logs.count("rebuilding shard") == 1, logs[-4000:]
    assert logs.count("scrubber rebuilt shards") <= 1, logs[-4000:]
    assert scrub_state(nodes[0])["healed_total"] - healed_before == 1


def test_scrub_now_pause_and_resume(node_factory):
    nodes, _ = cluster.form(node_factory, "sw", n=3, extra_args=SLOW_SCRUB)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[2].client(ak, sk)
    bucket = f"sw-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(18)
    for i in range(6):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=rng.randbytes(200_000 + i))

    # The first pass ran over the empty cluster at start; the next is an hour away.
    deadline = time.monotonic() + BEGIN_WAIT
    while scrub_state(nodes[1]).get("last") is None:
        assert time.monotonic() < deadline, scrub_state(nodes[1])
        time.sleep(0.5)
    first = scrub(nodes[1])["state"]
    assert first["running"] is None and first["paused"] is False, first
    time.sleep(3)
    assert scrub(nodes[1])["state"]["pass"] == first["pass"]

    # --now begins a pass at once; it ends having seen the six objects.
    shown = scrub(nodes[1], "--now")
    assert shown["every_ms"] == 3_600_000, shown
    deadline = time.monotonic() + BEGIN_WAIT
    while True:
        s = scrub(nodes[2])["state"]
        if s["last"] and s["last"]["pass"] > first["pass"]:
            break
        assert time.monotonic() < deadline, f"--now began no pass within {BEGIN_WAIT}s: {s}"
        time.sleep(0.5)
    assert s["pass"] == first["pass"] + 1, s
    assert s["last"]["tally"]["full"]["parts"] == 6, s

    # Paused, a pass asked for does not begin, and status says so on every node.
    paused = scrub(nodes[0], "--pause")["state"]
    assert paused["paused"] is True, paused
    scrub(nodes[1], "--now")
    time.sleep(PAUSE_WATCH)
    for n in nodes:
        s = scrub_state(n)
        assert s["paused"] is True, (n.name, s)
        assert s["pass"] == paused["pass"] and s["running"] is None, (n.name, s)
    text = harness.run_cli(["status", "--data", str(nodes[2].data_dir)])
    assert text.returncode == 0 and "paused" in text.stdout, text.stdout
    assert all(metric(n.metrics_text(), "hamster_scrub_paused") == 1 for n in nodes)

    # Resumed, the pass asked for while paused begins and completes.
    assert scrub(nodes[2], "--resume")["state"]["paused"] is False
    deadline = time.monotonic() + BEGIN_WAIT
    while True:
        s = scrub(nodes[0])["state"]
        if s["last"] and s["last"]["pass"] > paused["pass"]:
            break
        assert time.monotonic() < deadline, f"no pass after --resume within {BEGIN_WAIT}s: {s}"
        time.sleep(0.5)
    assert s["paused"] is False and s["last"]["tally"]["full"]["parts"] == 6, s

