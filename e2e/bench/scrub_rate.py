#!/usr/bin/env python3
"""What the background scrubber costs on a six-node loopback cluster: a benchmark, not a test.

Forms six nodes (4+2; objects under 128 KiB as 1+2 replicas), writes the data set (16 MiB
objects with `hamster bench --workload large-put --keep`, 64 KiB ones with boto3), then
measures, one after another:

  pass at the default pace    `hamster scrub --now`, timed from the replicated state (the
                              pass's `started_ms` to `done_ms`), no client load
  client load, paused         `hamster bench` through a follower with the scrubber paused
  client load, scrubbing      the same bench while passes run back to back at the default
                              pace (a watcher asks `--now` whenever one ends; it reports how
                              much of the bench a pass was running)
  pass at a high pace         every node restarted with `--scrub-rate 1GiB`, then timed passes

A pass's rate is given in object bytes (what clients stored), shard bytes (what the homes
hashed: (k+m)/k of that for coded parts, three copies for small ones) and parts per second.

    .venv-e2e/bin/python e2e/bench/scrub_rate.py --bin target/release/hamster

The data dirs are removed at the end unless `--keep-data`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cluster  # noqa: E402
import harness  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
FILL_BUCKET = "fill"
# A pass over a few GiB at the slowest pace here ends well within this.
PASS_TIMEOUT = 900.0
# How often the scrubber's state is looked at while a pass is timed or kept running.
POLL_EVERY = 0.25


def scrub(node, *args: str) -> dict:
    r = harness.run_cli(["scrub", "--json", "--data", str(node.data_dir), *args], timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"hamster scrub {' '.join(args)}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def bench_json(node, creds, workloads: str, duration: float, *extra: str) -> tuple[list, str]:
    """Runs `hamster bench --json`; the figures it printed and its stderr."""
    r = subprocess.run(
        [harness.hamster_bin(), "bench", "--endpoint", node.endpoint,
         "--access-key", creds.access_key, "--secret-key", creds.secret_key,
         "--workload", workloads, "--duration", str(duration), "--quiet", "--json", *extra],
        capture_output=True, text=True, env=harness.child_env(), stdin=subprocess.DEVNULL,
    )
    figures = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return figures, r.stderr.strip()


def fill(founder, via, args) -> dict:
    t0 = time.monotonic()
    figures, err = bench_json(via, founder, "large-put", 3600, "--size", "16MiB", "--streams",
                              "1", "--count", str(args.fill_16m), "--keep", "--bucket",
                              FILL_BUCKET)
    if err and "kept:" not in err:
        print(f"   large-put fill: {err}", flush=True)
    s3 = via.client(founder.access_key, founder.secret_key)
    rng = random.Random(64)
    body = rng.randbytes(64 * 1024)

    def put(i):
        # Each object differs from the others in its first bytes.
        s3.put_object(Bucket=FILL_BUCKET, Key=f"small/{i:05d}",
                      Body=i.to_bytes(4, "big") + body[4:])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(args.fill_64k)))
    written = sum(f["bytes"] for f in figures) + args.fill_64k * len(body)
    return {"seconds": time.monotonic() - t0, "bytes": written,
            "errors": sum(f["errors"] for f in figures)}


def time_pass(node) -> dict:
    """Asks for a pass and waits for it to end; what the replicated state says of it."""
    before = scrub(node)["state"]
    if before["running"] is not None:
        raise RuntimeError(f"a pass is already running: {before}")
    scrub(node, "--now")
    deadline = time.monotonic() + PASS_TIMEOUT
    while time.monotonic() < deadline:
        s = scrub(node)["state"]
        last = s.get("last")
        if last and last["pass"] > before["pass"]:
            t = last["tally"]
            secs = (last["done_ms"] - last["started_ms"]) / 1000
            parts = sum(t[h]["parts"] for h in ("full", "degraded", "at_risk", "unrecoverable"))
            obj = sum(t[h]["bytes"] for h in ("full", "degraded", "at_risk", "unrecoverable"))
            return {"pass": last["pass"], "seconds": secs, "parts": parts, "object_bytes": obj,
                    "shard_bytes": t["shard_bytes"], "shards": t["shards_verified"],
                    "rebuilt": t["shards_rebuilt"], "full": t["full"]["parts"],
                    "unreachable": t["shards_unreachable"]}
        time.sleep(POLL_EVERY)
    raise RuntimeError(f"the pass did not end within {PASS_TIMEOUT}s")


def pass_line(p: dict) -> str:
    s = max(p["seconds"], 1e-3)
    return (f"pass #{p['pass']}: {p['seconds']:.1f} s, {p['parts']} parts ({p['full']} full), "
            f"{p['object_bytes'] / GIB:.2f} GiB objects, {p['shard_bytes'] / GIB:.2f} GiB shards, "
            f"{p['shards']} shards verified, {p['rebuilt']} rebuilt -> "
            f"{p['object_bytes'] / MIB / s:.0f} MiB/s objects, "
            f"{p['shard_bytes'] / MIB / s:.0f} MiB/s shards, {p['parts'] / s:.0f} parts/s")


class KeepScrubbing:
    """While open, asks for a new pass whenever none runs, and samples whether one runs."""

    def __init__(self, node):
        self.node = node
        self.stop = threading.Event()
        self.samples = 0
        self.running = 0
        self.passes = set()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            s = scrub(self.node)["state"]
            self.samples += 1
            if s["running"] is not None:
                self.running += 1
                self.passes.add(s["pass"])
            else:
                scrub(self.node, "--now")
            self.stop.wait(POLL_EVERY)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def fig_line(f: dict) -> str:
    pct = "/".join(f"{f[k]:.1f}" if f.get(k) is not None else "-"
                   for k in ("p50_ms", "p99_ms", "p999_ms"))
    errs = f", {f['errors']} errors" if f.get("errors") else ""
    return f"{f['label']:<28} {f['value']:8.1f} {f['unit']:<6} p50/p99/p99.9 {pct} ms{errs}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", help="hamster binary (default: $HAMSTER_BIN)")
    ap.add_argument("--fill-16m", type=int, default=100, help="16 MiB objects written")
    ap.add_argument("--fill-64k", type=int, default=2000, help="64 KiB objects written")
    ap.add_argument("--workloads", default="put-1m,get-1m,mixed")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per bench figure")
    ap.add_argument("--rounds", type=int, default=2,
                    help="paused/scrubbing bench pairs, alternated")
    ap.add_argument("--fast-passes", type=int, default=2, help="passes timed at 1 GiB/s")
    ap.add_argument("--keep-data", action="store_true")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())
    harness.hamster_bin()

    base = Path(tempfile.mkdtemp(prefix="scrub-bench-", dir=os.environ.get("TMPDIR", "/tmp")))
    made: list = []
    try:
        print(f"forming six nodes under {base} (load average {os.getloadavg()[0]:.1f})",
              flush=True)
        nodes, reports = cluster.form(cluster.local_factory(base, made), "sb", n=6, voters=5)
        founder = nodes[0]
        leader_id = reports[0]["leader"]
        by_id = cluster.by_id(nodes, reports)
        via = next(n for n in nodes[1:] if by_id.get(leader_id) is not n)
        f = fill(founder, via, args)
        print(f"filled {f['bytes'] / GIB:.2f} GiB in {f['seconds']:.0f} s "
              f"({f['errors']} errors)", flush=True)
        disk = sum(p.stat().st_size for n in nodes for p in harness.shard_files(n.data_dir))
        print(f"shard files on disk: {disk / GIB:.2f} GiB", flush=True)

        print("\n== one pass at the default pace (32 MiB/s per node), no client load", flush=True)
        default_pass = time_pass(via)
        print("  " + pass_line(default_pass), flush=True)

        print(f"\n== client load ({args.workloads}, {args.duration:.0f} s each, c=16) through "
              f"a follower", flush=True)
        for r in range(args.rounds):
            scrub(via, "--pause")
            figs, err = bench_json(via, founder, args.workloads, args.duration)
            print(f"  round {r + 1}, scrubber paused (load average after "
                  f"{os.getloadavg()[0]:.1f}):", flush=True)
            for fg in figs:
                print("    " + fig_line(fg), flush=True)
            if err:
                print(f"    bench: {err}", flush=True)
            scrub(via, "--resume")
            with KeepScrubbing(via) as keep:
                figs, err = bench_json(via, founder, args.workloads, args.duration)
            print(f"  round {r + 1}, scrubbing at the default pace (a pass ran in "
                  f"{keep.running}/{keep.samples} samples; passes {sorted(keep.passes)}):",
                  flush=True)
            for fg in figs:
                print("    " + fig_line(fg), flush=True)
            if err:
                print(f"    bench: {err}", flush=True)
            # Let the pass in progress end before the next paused round.
            deadline = time.monotonic() + PASS_TIMEOUT
            while scrub(via)["state"]["running"] is not None and time.monotonic() < deadline:
                time.sleep(POLL_EVERY)

        print("\n== every node restarted with --scrub-rate 1GiB, no client load", flush=True)
        for n in nodes:
            n.stop()
            n.extra_args = ["--scrub-rate", "1GiB"]
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            n.wait_ready()
        cluster.wait_agreed(nodes, voters=5)
        for _ in range(args.fast_passes):
            print("  " + pass_line(time_pass(via)), flush=True)
        return 0
    finally:
        for n in made:
            n.stop()
        if args.keep_data:
            print(f"data kept under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
