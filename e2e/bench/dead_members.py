#!/usr/bin/env python3
"""Writes through the live nodes of a nine-node Hamster cluster (4+2) with two members dead for
good, on loopback: a benchmark, not a test.

Forms nine nodes (one founds, eight join, five voters), measures `hamster bench` through one
node while all are up, kills two members that are neither that node nor the leader (SIGKILL,
never restarted), makes a few writes (counting the refused ones) and measures again through
the same node. The figures to compare are the
errors (`SlowDown` refusals) and the latency of the small (4 KiB, stored 1+2) and 1 MiB (coded
4+2) PUTs. Every node shares this machine's cores.

    .venv-e2e/bin/python e2e/bench/dead_members.py [--bin target/debug/hamster] [--count 1030]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cluster  # noqa: E402
import harness  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

# Writes made right after the kill, before the measured figures.
DETECTION_WRITES = 20


def bench(node, creds, args) -> None:
    """`hamster bench` through `node`; failed requests are figures here, not a reason to stop."""
    subprocess.run(
        [harness.hamster_bin(), "bench", "--endpoint", node.endpoint,
         "--access-key", creds.access_key, "--secret-key", creds.secret_key,
         "--workload", args.workloads, "--duration", str(args.duration),
         "--count", str(args.count), "--quiet"],
        check=False,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=None, help="hamster binary (default: HAMSTER_BIN or target/debug)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per figure at most")
    ap.add_argument("--count", type=int, default=1030, help="requests per figure at most")
    ap.add_argument("--workloads", default="small,put-1m")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())

    base = Path(tempfile.mkdtemp(prefix="hamster-dead-bench-"))
    nodes: list = []
    try:
        nine, reports = cluster.form(cluster.local_factory(base, nodes), "n", n=9, voters=5)
        leader = cluster.by_id(nine, reports)[reports[0]["leader"]]
        via = next(n for n in nine if n is not leader)
        print(f"== nine nodes up, through {via.name} ({via.endpoint})", flush=True)
        bench(via, nine[0], args)
        dead = [n for n in nine if n is not leader and n is not via][-2:]
        for n in dead:
            n.kill9()
        print(f"== {', '.join(n.name for n in dead)} killed for good; through {via.name}",
              flush=True)
        # The node written through learns who is dead from its own requests: a few writes
        # first, each counted, so the figures after them show steady state.
        s3 = via.client(nine[0].access_key, nine[0].secret_key)
        s3.create_bucket(Bucket="detect")
        refused = 0
        for i in range(DETECTION_WRITES):
            try:
                s3.put_object(Bucket="detect", Key=f"d{i}", Body=os.urandom(4096))
            except ClientError as e:
                assert harness.error_code(e) == "SlowDown", e
                refused += 1
        print(f"== {refused} of {DETECTION_WRITES} first writes refused while {via.name} "
              "met the dead members", flush=True)
        bench(via, nine[0], args)
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
