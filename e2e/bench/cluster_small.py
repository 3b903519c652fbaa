#!/usr/bin/env python3
"""Small-object figures of a three-node Hamster cluster on loopback: a benchmark, not a test.

Starts three nodes (one founds, two join), waits until they agree, then runs
`hamster bench --workload small` against the leader and against a follower and prints both
tables. Every node and every figure share this machine's cores.

    .venv-e2e/bin/python e2e/bench/cluster_small.py [--bin target/release/hamster] [--duration 5]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=None, help="hamster binary (default: HAMSTER_BIN or target/debug)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())

    base = Path(tempfile.mkdtemp(prefix="hamster-cluster-bench-"))
    nodes: list = []
    try:
        nodes, reports = cluster.form(cluster.local_factory(base, nodes), "n")
        founder = nodes[0]
        by_id = cluster.by_id(nodes, reports)
        leader = by_id[reports[0]["leader"]]
        follower = next(n for n in nodes if n is not leader)
        for role, node in (("leader", leader), ("follower", follower)):
            print(f"== against the {role} ({node.endpoint})", flush=True)
            cluster.bench(node, founder, "small", args.duration)
    finally:
        for n in nodes:
            n.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
