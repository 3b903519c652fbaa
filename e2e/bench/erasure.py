#!/usr/bin/env python3
"""Throughput of a six-node Hamster cluster (objects coded 4+2) against one node (1+0), all on
loopback: a benchmark, not a test.

Starts a single node and measures it, stops it, then forms six nodes (one founds, five join)
and measures through one of them. Both runs use `hamster bench` with the same workloads
(large PUT/GET at 1 and N streams, 1 MiB PUT/GET ops/s, 4 KiB small objects). Every node and
every figure share this machine's cores, so the cluster pays for six nodes' coding, hashing,
TLS and fsyncs on the same CPUs the single node has to itself.

    .venv-e2e/bin/python e2e/bench/erasure.py [--bin target/release/hamster] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cluster  # noqa: E402


def bench(node, founder, args) -> None:
    cluster.bench(node, founder, args.workloads, args.duration, "--size", args.size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=None, help="hamster binary (default: HAMSTER_BIN or target/debug)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    ap.add_argument("--size", default="64MiB", help="object size of the large workloads")
    ap.add_argument("--workloads", default="large-put,large-get,put-1m,get-1m,small")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())

    base = Path(tempfile.mkdtemp(prefix="hamster-ec-bench-"))
    nodes: list = []
    try:
        make = cluster.local_factory(base, nodes)
        single = make("single")
        print(f"== one node, 1+0 ({single.endpoint})", flush=True)
        bench(single, single, args)
        single.stop()
        nodes.clear()
        six, _ = cluster.form(make, "ec", n=6, voters=5)
        print(f"== six nodes, 4+2, through {six[1].name} ({six[1].endpoint})", flush=True)
        bench(six[1], six[0], args)
    finally:
        for n in nodes:
            n.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
