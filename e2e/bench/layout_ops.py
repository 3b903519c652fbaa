#!/usr/bin/env python3
"""What layout operations cost on a six-node loopback cluster holding over 2 GiB: a benchmark,
not a test.

Forms three nodes (2+1), fills them with objects (1 MiB and 16 MiB ones written by `hamster
bench --keep`, plus small ones of 10 B to 200 KB written with boto3), grows to six nodes by three
joins (each join opens a grow transition by itself), and then measures, one after another:

  optimize   2+1 parts re-encoded to 4+2 on six nodes (`hamster optimize`)
  grow       a seventh node joins (`hamster serve --token T`)
  drain      one of seven drained (7 → 6 nodes, same 4+2 profile: not a shrink)
  replace    a fresh node takes one member's place (`hamster serve --token T --replaces OLD`)

For each: wall time from the command to `"transition": null` in `hamster status --json` (polled
every second), parts, shards and bytes moved (the transition's progress as last seen open, and
the sum over all nodes of `hamster_migration_bytes_moved_total`), and the client throughput a
`hamster bench` run through one node (never the leader, never a node that leaves) sees while the
operation runs, against the same bench on the idle cluster just before. A bench that outlasts
the operation is diluted by idle time; the `overlap` column says how much of it ran while the
transition was open.

    .venv-e2e/bin/python e2e/bench/layout_ops.py --bin target/release/hamster \
        [--migrate-rate 1GiB] [--no-load]

`--no-load` runs the operations with no bench, for their own pace. After every step it prints
each member's shards as `hamster status` reports them beside what its data dir holds. The data
dirs (several GiB) are removed at the end unless `--keep-data`.
"""

from __future__ import annotations

import argparse
import hashlib
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

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cluster  # noqa: E402
import harness  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
# One operation on a couple of GiB finishes in minutes at the default rate; an operation still
# open after this long is reported as stuck.
OP_TIMEOUT = 1800.0
# How often an open transition is looked at (the wall-time resolution).
POLL_EVERY = 1.0
# Sizes of the small objects written with boto3, in turn.
SMALL_SIZES = [10, 4096, 40_000, 200_000]
FILL_BUCKET = "fill"


def cli(node, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return harness.run_cli([*args, "--data", str(node.data_dir)], timeout=timeout)


def bench_json(node, creds, workloads: str, duration: float, *extra: str) -> tuple[list, str]:
    """Runs `hamster bench --json`; the figures it printed and its stderr (it exits nonzero
    when a figure saw errors, which is reported, not raised)."""
    r = subprocess.run(
        [harness.hamster_bin(), "bench", "--endpoint", node.endpoint,
         "--access-key", creds.access_key, "--secret-key", creds.secret_key,
         "--workload", workloads, "--duration", str(duration), "--quiet", "--json", *extra],
        capture_output=True, text=True, env=harness.child_env(), stdin=subprocess.DEVNULL,
    )
    figures = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return figures, r.stderr.strip()


def metric_sum(nodes, name: str) -> int:
    """`name` summed over every running node's /metrics (only the leader's layout manager
    counts moves, and the leader may change)."""
    total = 0
    for n in nodes:
        if not n.running():
            continue
        try:
            text = requests.get(f"{n.admin_url}/metrics", timeout=10).text
        except requests.RequestException:
            continue
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += int(float(line.split()[-1]))
    return total


def moved_counters(nodes) -> dict:
    return {
        "bytes": metric_sum(nodes, "hamster_migration_bytes_moved_total"),
        "shards": metric_sum(nodes, "hamster_migration_shards_moved_total"),
    }


def layout_of(node) -> dict:
    r = cluster.status(node)
    assert r is not None, node.report()
    return r["layout"]


def wait_done(node, version_above: int, done=lambda layout: True,
              timeout: float = OP_TIMEOUT) -> dict:
    """Polls until the layout is past `version_above`, `done(layout)` holds and no transition
    is open. Returns the finish time, when the transition was first seen open, the last
    progress seen and the final layout; raises with the last status if it never finishes."""
    start = time.monotonic()
    deadline = start + timeout
    seen_open = None
    last_open = None
    last = None
    while time.monotonic() < deadline:
        r = cluster.status(node)
        if r is not None and r.get("layout"):
            last = r["layout"]
            t = last.get("transition")
            if t is not None and t["id"] > version_above:
                if seen_open is None:
                    seen_open = time.monotonic()
                last_open = t
            if last["version"] > version_above and t is None and done(last):
                return {"finished": time.monotonic(), "seen_open": seen_open,
                        "transition": last_open, "layout": last}
        time.sleep(POLL_EVERY)
    raise RuntimeError(f"layout transition did not finish within {timeout}s; last layout: "
                       f"{json.dumps(last)}")


def fill(founder, via, rng: random.Random, args) -> dict:
    """Writes the data set; returns what was written and the small objects' digests."""
    t0 = time.monotonic()
    figures = []
    f, err = bench_json(via, founder, "put-1m", 3600, "--count", str(args.fill_1m),
                        "--keep", "--bucket", FILL_BUCKET, "--concurrency", "8")
    figures += f
    if err and "kept:" not in err:
        print(f"   put-1m fill: {err}", flush=True)
    # One stream: a second large-put figure would write the same keys again.
    f, err = bench_json(via, founder, "large-put", 3600, "--size", "16MiB", "--streams", "1",
                        "--count", str(args.fill_16m), "--keep", "--bucket", FILL_BUCKET)
    figures += f
    if err and "kept:" not in err:
        print(f"   large-put fill: {err}", flush=True)
    s3 = via.client(founder.access_key, founder.secret_key)
    small: dict[str, str] = {}
    bodies = [(f"small/{i:05d}", rng.randbytes(SMALL_SIZES[i % len(SMALL_SIZES)]))
              for i in range(args.fill_small)]

    def put(item):
        key, data = item
        s3.put_object(Bucket=FILL_BUCKET, Key=key, Body=data)
        return key, hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(8) as pool:
        for key, digest in pool.map(put, bodies):
            small[key] = digest
    written = sum(fg["bytes"] for fg in figures) + sum(len(b) for _, b in bodies)
    errors = sum(fg["errors"] for fg in figures)
    return {"seconds": time.monotonic() - t0, "bytes": written, "errors": errors,
            "figures": figures, "small": small,
            "objects": sum(fg["ops"] for fg in figures) + len(bodies)}


def check(via, founder, small: dict) -> dict:
    """Reads every small object back (digest checked) and counts the bucket's objects."""
    s3 = via.client(founder.access_key, founder.secret_key)

    def get(key):
        body = s3.get_object(Bucket=FILL_BUCKET, Key=key)["Body"].read()
        return hashlib.sha256(body).hexdigest() == small[key]

    with ThreadPoolExecutor(8) as pool:
        good = sum(pool.map(get, list(small)))
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=FILL_BUCKET):
        count += page.get("KeyCount", 0)
    return {"small_ok": good, "small_total": len(small), "listed": count}


def on_disk(node) -> tuple[int, int]:
    """Shard files in the node's data dir and their bytes, counted on disk."""
    files = harness.shard_files(node.data_dir)
    return len(files), sum(f.stat().st_size for f in files if f.exists())


def print_shards(via, nodes) -> None:
    """Each member's shards as `hamster status` reports them, beside what its disk holds."""
    r = cluster.status(via) or {}
    by_addr = {n.cluster_addr: n for n in nodes}
    for m in r.get("members", []):
        count, size = m.get("shard_count"), m.get("shard_bytes")
        line = (f"     {m['node_id']} {m.get('state') or '?':11} status "
                f"{count if count is not None else '?':>6} shards "
                f"{size / MIB if size is not None else 0:8.1f} MiB")
        node = by_addr.get(m["cluster_addr"])
        if node is not None:
            files, disk = on_disk(node)
            line += f"; disk {files:>6} files {disk / MIB:8.1f} MiB"
        print(line, flush=True)


class During:
    """A `hamster bench` run in a thread, started with an operation."""

    def __init__(self, node, creds, args):
        self.node, self.creds, self.args = node, creds, args
        self.figures: list = []
        self.err = ""
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        self.start = time.monotonic()
        self.figures, self.err = bench_json(self.node, self.creds, self.args.workloads,
                                            self.args.duration)
        self.end = time.monotonic()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join()


def measure(name: str, nodes, founder, via, args, act, done=lambda layout: True) -> dict:
    """Idle bench, then `act()` with the same bench running, until the transition closes."""
    idle, idle_err = ([], "") if args.no_load else bench_json(via, founder, args.workloads,
                                                               args.duration)
    before = layout_of(via)
    moved0 = moved_counters(nodes)
    print(f"== {name}", flush=True)
    t0 = time.monotonic()
    during = During(via, founder, args)
    if args.no_load:
        act()
        result = wait_done(via, before["version"], done)
    else:
        with during:
            act()
            result = wait_done(via, before["version"], done)
    moved1 = moved_counters(nodes)
    finished = result["finished"]
    wall = finished - t0
    overlap = 0.0
    bench_secs = 0.0
    if not args.no_load:
        bench_secs = during.end - during.start
        overlap = max(0.0, min(finished, during.end) - during.start) / bench_secs
    t = result["transition"] or {}
    p = t.get("progress", {})
    out = {
        "op": name,
        "wall_s": wall,
        "open_after_s": (result["seen_open"] - t0) if result["seen_open"] else None,
        "op_desc": t.get("op"),
        "passes": p.get("pass"),
        "parts_seen": p.get("parts_seen"),
        "parts_moved": p.get("parts_moved"),
        "parts_reencoded": p.get("parts_reencoded"),
        "shards_moved": p.get("shards_moved"),
        "bytes_moved": p.get("bytes_moved"),
        "metric_bytes": moved1["bytes"] - moved0["bytes"],
        "metric_shards": moved1["shards"] - moved0["shards"],
        "layout_version": result["layout"]["version"],
        "nodes_after": len(result["layout"]["nodes"]),
        "idle": idle,
        "idle_err": idle_err,
        "during": during.figures,
        "during_err": during.err,
        "bench_s": bench_secs,
        "overlap": overlap,
        # Others' work on the same cores shows here (the machine may be shared).
        "loadavg_1m": os.getloadavg()[0],
    }
    print(f"   wall {wall:.1f} s (open seen after {out['open_after_s'] or 0:.1f} s), "
          f"{out['parts_moved']} parts moved, {out['parts_reencoded']} re-encoded, "
          f"{out['shards_moved']} shards, {fmt_bytes(out['bytes_moved'])} "
          f"(metrics: {fmt_bytes(out['metric_bytes'])} in {out['metric_shards']} shards); "
          f"bench overlap {overlap:.0%}; load average {out['loadavg_1m']:.1f}", flush=True)
    for fig_idle, fig_during in zip(idle, during.figures):
        print(f"   {fig_idle['label']:16} idle {fig_line(fig_idle)}  |  during "
              f"{fig_line(fig_during)}", flush=True)
    for err in (idle_err, during.err):
        if err:
            print(f"   bench said: {err}", flush=True)
    print_shards(via, nodes)
    return out


def fmt_bytes(n) -> str:
    if n is None:
        return "?"
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB"


def fig_line(f: dict) -> str:
    pct = "/".join(f"{f[k]:.0f}" if f.get(k) is not None else "-"
                   for k in ("p50_ms", "p99_ms", "p999_ms"))
    errs = f", {f['errors']} errors" if f.get("errors") else ""
    return f"{f['value']:7.1f} {f['unit']} (p50/p99/p99.9 {pct} ms{errs})"


def leader_of(nodes, node):
    r = cluster.status(node)
    assert r is not None and r["leader"], node.report()
    ids = {}
    for n in nodes:
        s = cluster.status(n)
        if s is not None:
            ids[s["node_id"]] = n
    return r["leader"], ids


def markdown(results: list) -> str:
    """The results as the PERF.md table."""
    lines = [
        "| operation | wall | parts moved (re-encoded) | shards moved | bytes moved | "
        "PUT 1 MiB c=16 idle → during | p50 / p99 / p99.9 ms idle → during | "
        "GET 1 MiB c=16 idle → during | p50 / p99 / p99.9 ms idle → during | bench overlap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [r["op"], f"{r['wall_s']:.0f} s", f"{r['parts_moved']} ({r['parts_reencoded']})",
                 f"{r['metric_shards']}", fmt_bytes(r["metric_bytes"])]
        for name in ("put-1m", "get-1m"):
            idle = next((f for f in r["idle"] if f["name"] == name), None)
            during = next((f for f in r["during"] if f["name"] == name), None)
            if idle is None or during is None:
                cells += ["-", "-"]
                continue
            ratio = during["value"] / idle["value"] if idle["value"] else 0.0
            errs = f", {during['errors']} errors" if during["errors"] else ""
            cells.append(f"{idle['value']:.1f} → {during['value']:.1f} ops/s "
                         f"(×{ratio:.2f}{errs})")

            def pct(f):
                return " / ".join(f"{f[k]:.0f}" if f.get(k) is not None else "-"
                                  for k in ("p50_ms", "p99_ms", "p999_ms"))
            cells.append(f"{pct(idle)} → {pct(during)}")
        cells.append(f"{r['overlap']:.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=None, help="hamster binary (default: HAMSTER_BIN or target/debug)")
    ap.add_argument("--migrate-rate", default=None,
                    help="serve --migrate-rate for every node (default: the node's default)")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per bench figure")
    ap.add_argument("--workloads", default="put-1m,get-1m")
    ap.add_argument("--fill-1m", type=int, default=1150, help="1 MiB objects written first")
    ap.add_argument("--fill-16m", type=int, default=64, help="16 MiB objects written first")
    ap.add_argument("--fill-small", type=int, default=1000,
                    help="small objects (10 B to 200 KB) written first")
    ap.add_argument("--no-load", action="store_true",
                    help="run each operation on an idle cluster (no bench), for its own pace")
    ap.add_argument("--out", default=None, help="write every result as JSON here")
    ap.add_argument("--keep-data", action="store_true",
                    help="leave the nodes' data dirs behind (they hold several GiB)")
    args = ap.parse_args()
    if args.bin:
        os.environ["HAMSTER_BIN"] = str(Path(args.bin).resolve())
    extra = ["--migrate-rate", args.migrate_rate] if args.migrate_rate else []

    base = Path(tempfile.mkdtemp(prefix="hamster-layout-bench-"))
    nodes: list = []
    results: list = []
    report: dict = {"migrate_rate": args.migrate_rate or "default", "base": str(base)}
    report["loadavg_start"] = os.getloadavg()
    print(f"== {os.cpu_count()} cores, load average {report['loadavg_start'][0]:.1f} at start; "
          f"migrate rate {report['migrate_rate']}", flush=True)
    try:
        make = cluster.local_factory(base, nodes)
        three, _ = cluster.form(make, "lo", n=3, extra_args=extra)
        founder = three[0]
        rng = random.Random(16)
        print(f"== filling three nodes (2+1) through {three[1].name}", flush=True)
        filled = fill(founder, three[1], rng, args)
        print(f"   {filled['objects']} objects, {fmt_bytes(filled['bytes'])} in "
              f"{filled['seconds']:.1f} s, {filled['errors']} errors", flush=True)
        for f in filled["figures"]:
            print(f"   {f['label']:16} {fig_line(f)}", flush=True)
        print_shards(founder, nodes)
        report["fill"] = {k: v for k, v in filled.items() if k != "small"}

        grows = []
        for i in range(3, 6):
            before = layout_of(founder)
            t0 = time.monotonic()
            make(f"lo-{i}", token=cluster.mint(founder), extra_args=extra)
            r = wait_done(founder, before["version"], lambda l, n=i + 1: len(l["nodes"]) == n)
            p = (r["transition"] or {}).get("progress", {})
            grows.append({"to": i + 1, "wall_s": r["finished"] - t0,
                          "bytes_moved": p.get("bytes_moved"),
                          "shards_moved": p.get("shards_moved")})
            print(f"== grow {i} → {i + 1}: {r['finished'] - t0:.1f} s, "
                  f"{fmt_bytes(p.get('bytes_moved'))} in {p.get('shards_moved')} shards",
                  flush=True)
        report["grows"] = grows
        print_shards(founder, nodes)

        # The bench goes through a node that neither leads nor leaves; the drained and the
        # replaced node are two others that do not lead.
        leader_id, ids = leader_of(nodes, founder)
        others = [n for nid, n in ids.items() if nid != leader_id]
        via, drained, replaced = others[0], others[1], others[2]
        node_id = {n: nid for nid, n in ids.items()}
        print(f"   leader {leader_id}; bench through {via.name}", flush=True)

        results.append(measure("optimize 2+1 → 4+2 (6 nodes)", nodes, founder, via, args,
                               lambda: check_ok(cli(via, "optimize", "--detach"))))

        def grow7():
            make("lo-6", token=cluster.mint(founder), extra_args=extra)

        results.append(measure("grow 6 → 7", nodes, founder, via, args, grow7,
                               lambda l: len(l["nodes"]) == 7))

        victim = node_id[drained]
        results.append(measure("drain 7 → 6", nodes, founder, via, args,
                               lambda: check_ok(cli(via, "drain", victim, "--yes", "--detach")),
                               lambda l: str(int(victim, 16)) not in l["nodes"]))
        check_ok(cli(via, "remove", victim))
        drained.stop()

        old = node_id[replaced]

        def replace():
            make("lo-r", token=cluster.mint(founder), extra_args=extra + ["--replaces", old])

        results.append(measure("replace (6 nodes)", nodes, founder, via, args, replace,
                               lambda l: str(int(old, 16)) not in l["nodes"]))
        check_ok(cli(via, "remove", old))
        replaced.stop()

        checked = check(via, founder, filled["small"])
        print(f"== read back: {checked['small_ok']} of {checked['small_total']} small objects "
              f"identical; {checked['listed']} objects listed (written {filled['objects']})",
              flush=True)
        report["check"] = checked
        report["results"] = results
        report["loadavg_end"] = os.getloadavg()
        print()
        print(markdown(results))
    finally:
        for n in nodes:
            n.stop()
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        if not args.keep_data:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def check_ok(r: subprocess.CompletedProcess) -> None:
    if r.returncode != 0:
        raise RuntimeError(f"{r.args}: exit {r.returncode}: {r.stderr.strip()} {r.stdout.strip()}")


if __name__ == "__main__":
    sys.exit(main())
