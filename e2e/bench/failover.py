#!/usr/bin/env python3
"""Failover time of a three-node Hamster cluster on loopback: a benchmark, not a test.

Each round finds the leader, kills it with SIGKILL while a client keeps writing small objects
through a follower, and measures

  - election: from the kill until a survivor's `hamster status` names a new leader, and
  - write gap: from the kill until the first write begun after it is acknowledged,

then restarts the killed node from disk and waits until all three agree again. Prints every
round, then the median and the spread, and one JSON line.

    .venv-e2e/bin/python e2e/bench/failover.py [--rounds 7] [--bin target/release/hamster]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402
import cluster  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bin", default=None, help="hamster binary (default: HAMSTER_BIN or target/debug)")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())

    base = Path(tempfile.mkdtemp(prefix="hamster-failover-"))
    nodes: list = []
    try:
        nodes, reports = cluster.form(cluster.local_factory(base, nodes), "n")
        founder = nodes[0]
        ak, sk = founder.access_key, founder.secret_key
        bucket = f"failover-{uuid.uuid4().hex[:8]}"
        founder.client(ak, sk).create_bucket(Bucket=bucket)

        elections, gaps = [], []
        for rnd in range(1, args.rounds + 1):
            by_id = cluster.by_id(nodes, reports)
            old = reports[0]["leader"]
            leader = by_id[old]
            writer_node = next(n for n in nodes if n is not leader)
            survivors = [n for n in nodes if n is not leader]
            s3 = writer_node.client(ak, sk)
            # (start, end) of each acknowledged write.
            acked: list[tuple[float, float]] = []
            stop = threading.Event()

            def write() -> None:
                i = 0
                while not stop.is_set():
                    try:
                        began = time.monotonic()
                        s3.put_object(Bucket=bucket, Key=f"r{rnd}/{i:06d}", Body=b"x")
                        acked.append((began, time.monotonic()))
                        i += 1
                    except Exception:  # noqa: BLE001 - failures during the election are expected
                        time.sleep(0.01)

            t = threading.Thread(target=write)
            t.start()
            time.sleep(1.0)
            killed = time.monotonic()
            leader.kill9()
            election = None
            while time.monotonic() - killed < 30 and election is None:
                r = cluster.status(survivors[0])
                if r and r["leader"] not in (None, old):
                    election = time.monotonic() - killed
                else:
                    time.sleep(0.02)
            deadline = killed + 30
            # Only writes begun after the kill count: one already committed may still land.
            while time.monotonic() < deadline and not any(b > killed for b, _ in acked):
                time.sleep(0.01)
            stop.set()
            t.join(30)
            after = [e for b, e in acked if b > killed]
            gap = after[0] - killed if after else float("nan")
            elections.append(election if election is not None else float("nan"))
            gaps.append(gap)
            print(f"round {rnd}: new leader seen after {elections[-1]:.3f} s, "
                  f"writes resumed after {gap:.3f} s", flush=True)
            leader.start()
            reports = cluster.wait_agreed(nodes)

        def summary(xs):
            xs = [x for x in xs if x == x]
            return statistics.median(xs), min(xs), max(xs)

        em, emin, emax = summary(elections)
        gm, gmin, gmax = summary(gaps)
        print(f"median over {args.rounds} kills: new leader {em:.3f} s (min {emin:.3f}, max {emax:.3f}); "
              f"write gap {gm:.3f} s (min {gmin:.3f}, max {gmax:.3f})")
        print(json.dumps({"figure": "failover", "rounds": args.rounds,
                          "election_median_s": round(em, 3), "write_gap_median_s": round(gm, 3),
                          "election_s": [round(x, 3) for x in elections],
                          "write_gap_s": [round(x, 3) for x in gaps]}))
        return 0
    finally:
        for n in nodes:
            n.stop()


if __name__ == "__main__":
    sys.exit(main())
