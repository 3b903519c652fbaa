#!/usr/bin/env python3
"""How one Hamster node's costs grow with the number of objects it stores: a benchmark, not a
test (issue 18's metadata-scale table).

Starts one release node on a fresh temporary data dir (127.0.0.1, ephemeral ports). For each
level N, in increasing order, it fills the store up to N objects of 4 KiB with
`hamster bench --workload fill` (only the difference to the previous level), then measures:

  small       `hamster bench --workload small --concurrency 16`: PUT/GET/HEAD/DELETE 4 KiB
              ops/s and p50/p99/p99.9 (the workload also runs at 64 connections; those
              figures are kept in --json output only)
  list        `hamster bench --workload list-existing --prefix fill/`, keys/s, and the same
              with `--delimiter /` (one common prefix per 100 filled objects), entries/s
  memory      the node's RssAnon and RssFile from /proc/PID/status, sampled every 200 ms:
              at rest (after the level's measurements, idle) and the peak during the fill and
              during the small-object phase
  LMDB        allocated bytes of DATA/meta/data.mdb (st_blocks * 512: the map is sparse)
              per stored object; the file also holds the Raft log
  snapshot    the latest "snapshot built" log line's bytes=, records= and ms= fields (a
              binary without them: the newest snapshot file's size, "not logged")
  restart     SIGTERM, wait for the exit, start again: seconds until the S3 port answers an
              unauthenticated request (the S3 listener opens only once the node serves)
  catch-up    at the largest level only, last: a second node joins with a token; seconds
              from its start until its `hamster_raft_applied_index` reaches the first node's.
              Joining makes it a voter, so nothing is measured after it.

Client and server share this machine's cores. Every process started here is stopped by PID and
the temporary directory removed, also on an error or Ctrl-C (unless --keep-data).

    python3 e2e/bench/metadata_scale.py --bin target/release/hamster \\
        --levels 10000,100000,1000000 [--duration 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

MIB = 1024 * 1024
# A release node on an empty dir is ready within seconds; a restart at 10^7 objects may not be.
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
SAMPLE_EVERY_S = 0.2
# Idle time before the at-rest memory sample, so the last phase's buffers are released.
REST_SETTLE_S = 3.0
CATCH_UP_TIMEOUT_S = 1800.0
SMALL_CONCURRENCY = 16


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def child_env() -> dict[str, str]:
    """Our environment without AWS_* / HAMSTER_* settings leaking into the children."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.startswith("HAMSTER_")}


class Procs:
    """Every child process this script started and has not yet reaped, by PID."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen] = {}

    def spawn(self, args: list[str], **kw) -> subprocess.Popen:
        # A session of its own: a Ctrl-C reaches this script only, which then stops each
        # child by PID in its own order.
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, env=child_env(),
                             start_new_session=True, **kw)
        self.live[p.pid] = p
        return p

    def stop(self, p: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> float:
        """SIGTERM, then SIGKILL after `timeout`; returns the seconds until it was gone."""
        t0 = time.monotonic()
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} still there {timeout:.0f}s after SIGTERM; SIGKILL")
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(10)
        self.live.pop(p.pid, None)
        return time.monotonic() - t0

    def stop_all(self) -> None:
        for p in list(self.live.values()):
            self.stop(p, 15.0)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Node:
    """One `hamster serve` on loopback; its stderr log goes to LOGS/NAME-START.log."""

    def __init__(self, procs: Procs, binary: str, data: Path, logs: Path, name: str,
                 token: str | None = None):
        self.procs, self.binary, self.data, self.logs, self.name = procs, binary, data, logs, name
        self.token = token
        self.s3_port, self.admin_port, self.cluster_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_files: list[Path] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> float:
        """Starts the process; returns the monotonic time it was started at."""
        self.starts += 1
        path = self.logs / f"{self.name}-{self.starts}.log"
        self.log_files.append(path)
        args = [self.binary, "serve", "--data", str(self.data),
                "--s3", f"127.0.0.1:{self.s3_port}",
                "--admin", f"127.0.0.1:{self.admin_port}",
                "--cluster-addr", f"127.0.0.1:{self.cluster_port}"]
        if self.token:
            args += ["--token", self.token]
        with open(path, "wb") as f:
            t0 = time.monotonic()
            self.proc = self.procs.spawn(args, stdout=f, stderr=subprocess.STDOUT)
        return t0

    def s3_answers(self) -> bool:
        """Whether the S3 port answers HTTP: an unauthenticated GET gets an S3 error status,
        which the listener gives only once the node serves."""
        try:
            status, _ = http_get(self.endpoint + "/", timeout=2.0)
            return 100 <= status < 600
        except (urllib.error.URLError, OSError):
            return False

    def wait_s3(self, t0: float, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds from `t0` until S3 answers."""
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited before serving; see {self.log_files[-1]}")
            if self.s3_answers():
                return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not serve S3 within {timeout:.0f}s")

    def start(self) -> float:
        return self.wait_s3(self.spawn())

    def stop(self) -> float:
        return self.procs.stop(self.proc) if self.proc is not None else 0.0

    def applied_index(self) -> int | None:
        try:
            status, text = http_get(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5.0)
        except (urllib.error.URLError, OSError):
            return None
        if status != 200:
            return None
        m = re.search(r"^hamster_raft_applied_index (\d+)", text, re.M)
        return int(m.group(1)) if m else None

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_files if p.exists())


class Memory:
    """Samples a node's RssAnon/RssFile every 200 ms and keeps the peak of the current phase."""

    def __init__(self, node: Node):
        self.node = node
        self.lock = threading.Lock()
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def read(self) -> dict[str, int]:
        """RssAnon and RssFile in kB, or zeros while no process is there."""
        out = {"RssAnon": 0, "RssFile": 0}
        proc = self.node.proc
        if proc is None or proc.poll() is not None:
            return out
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
        except (OSError, ValueError):
            pass
        return out

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_EVERY_S):
            now = self.read()
            with self.lock:
                for k, v in now.items():
                    self.peak[k] = max(self.peak[k], v)

    def phase_start(self) -> None:
        with self.lock:
            self.peak = self.read()

    def phase_peak(self) -> dict[str, float]:
        with self.lock:
            return {k: v / 1024 for k, v in self.peak.items()}

    def now_mib(self) -> dict[str, float]:
        return {k: v / 1024 for k, v in self.read().items()}

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)


class Bench:
    """Runs `hamster bench --json` against the node and returns its figures."""

    def __init__(self, procs: Procs, binary: str, node: Node, credentials: Path):
        self.procs, self.binary, self.node, self.credentials = procs, binary, node, credentials

    def run(self, *args: str) -> list[dict]:
        cmd = [self.binary, "bench", "--endpoint", self.node.endpoint,
               "--credentials", str(self.credentials), "--json", "--quiet", *args]
        p = self.procs.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate()
        finally:
            self.procs.stop(p)
        figures = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if p.returncode != 0:
            raise RuntimeError(f"hamster bench {' '.join(args)} failed ({p.returncode}): "
                               f"{err.strip()[-500:]}")
        return figures


def lmdb_bytes(data: Path) -> int:
    st = os.stat(data / "meta" / "data.mdb")
    return st.st_blocks * 512


# Fields of a "snapshot built" line: bytes and ms are needed, records is shown when logged.
SNAPSHOT_FIELDS = ("bytes", "ms", "records")
SNAPSHOT_FIELDS_NEEDED = 2


def latest_snapshot(text: str) -> dict | None:
    """The fields of the last "snapshot built" log line that carries them, and how many such
    lines there were."""
    found = None
    count = 0
    for line in text.splitlines():
        if "snapshot built" not in line:
            continue
        fields = {}
        for name in SNAPSHOT_FIELDS:
            m = re.search(rf"\b{name}=\"?(\d+)", line)
            if m:
                fields[name] = int(m.group(1))
        if all(name in fields for name in SNAPSHOT_FIELDS[:SNAPSHOT_FIELDS_NEEDED]):
            count += 1
            found = dict(fields, builds_logged=count)
    return found


def snapshot_file_bytes(data: Path) -> int | None:
    """The size of the newest finished snapshot file, or None when there is none: evidence of
    a build from a binary that does not log its fields."""
    newest = None
    for p in (data / "meta" / "snapshots").glob("*.snap"):
        try:
            st = p.stat()
        except FileNotFoundError:  # replaced by a newer one meanwhile
            continue
        if newest is None or st.st_mtime > newest.st_mtime:
            newest = st
    return newest.st_size if newest else None


def figure(figures: list[dict], name: str, concurrency: int | None = None) -> dict | None:
    for f in figures:
        if f["name"] == name and (concurrency is None or f["concurrency"] == concurrency):
            return f
    return None


def measure_level(level: int, filled: int, ctx: dict, args) -> tuple[dict, int]:
    node, mem, bench = ctx["node"], ctx["mem"], ctx["bench"]
    row: dict = {"objects": level}
    delta = level - filled
    mem.phase_start()
    if delta > 0:
        log(f"level {level}: filling {delta} objects")
        f = figure(bench.run("--workload", "fill", "--count", str(delta)), "fill")
        row["fill"] = f
        filled = level
    row["fill_peak_mib"] = mem.phase_peak()

    log(f"level {level}: small objects, {args.duration:g}s per figure")
    mem.phase_start()
    small = bench.run("--workload", "small", "--concurrency", str(SMALL_CONCURRENCY),
                      "--duration", str(args.duration))
    row["small_peak_mib"] = mem.phase_peak()
    row["small"] = {op: figure(small, f"small-{op}", SMALL_CONCURRENCY)
                    for op in ("put", "get", "head", "delete")}
    row["small_all"] = small

    log(f"level {level}: listing fill/ with and without a delimiter")
    row["list"] = figure(bench.run("--workload", "list-existing", "--prefix", "fill/",
                                   "--duration", str(args.duration)), "list-existing")
    row["list_delimited"] = figure(
        bench.run("--workload", "list-existing", "--prefix", "fill/", "--delimiter", "/",
                  "--duration", str(args.duration)), "list-existing-delimited")

    time.sleep(REST_SETTLE_S)
    row["rest_mib"] = mem.now_mib()
    lmdb = lmdb_bytes(node.data)
    row["lmdb_bytes"] = lmdb
    row["lmdb_bytes_per_object"] = lmdb / level if level else None
    row["snapshot"] = latest_snapshot(node.log_text())
    row["snapshot_file_bytes"] = snapshot_file_bytes(node.data)
    # Other work on the machine shares the cores with client and server; keep a trace of it.
    row["loadavg_1m"] = os.getloadavg()[0]

    log(f"level {level}: restart")
    row["stop_s"] = node.stop()
    row["restart_s"] = node.start()
    return row, filled


def catch_up(ctx: dict, args) -> dict:
    """A second node joins; seconds from its start until it has applied what the first has."""
    node, procs = ctx["node"], ctx["procs"]
    r = subprocess.run([args.bin, "token", "--data", str(node.data)], capture_output=True,
                       text=True, timeout=60, env=child_env(), stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"hamster token: {r.stderr.strip()}")
    joiner = Node(procs, args.bin, ctx["base"] / "joiner", ctx["logs"], "joiner",
                  token=r.stdout.strip())
    ctx["joiner"] = joiner
    leader_at_start = node.applied_index()
    t0 = joiner.spawn()
    while time.monotonic() - t0 < CATCH_UP_TIMEOUT_S:
        if joiner.proc.poll() is not None:
            raise RuntimeError(f"the joiner exited; see {joiner.log_files[-1]}")
        mine, theirs = joiner.applied_index(), node.applied_index()
        if mine is not None and theirs is not None and mine >= theirs:
            took = time.monotonic() - t0
            # A snapshot file on the joiner means it was sent one rather than the whole log.
            return {"seconds": took, "applied_index": mine,
                    "leader_index_at_join": leader_at_start,
                    "joiner_snapshot_file_bytes": snapshot_file_bytes(joiner.data)}
        time.sleep(0.1)
    raise RuntimeError(f"the joiner did not catch up within {CATCH_UP_TIMEOUT_S:.0f}s")


# -- reporting ------------------------------------------------------------------------------


def ops(f: dict | None) -> str:
    if not f:
        return "-"
    err = f" ({f['errors']} err)" if f.get("errors") else ""
    return f"{f['value']:.0f}{err}"


def lat(f: dict | None) -> str:
    if not f or f.get("p50_ms") is None:
        return "-"
    return f"{f['p50_ms']:.1f}/{f['p99_ms']:.1f}/{f['p999_ms']:.1f}"


def table(rows: list[dict], catch: dict | None) -> str:
    head = ["objects", "fill PUT/s", "fill p50/p99/p99.9 ms"]
    for op in ("PUT", "GET", "HEAD", "DELETE"):
        head += [f"{op} ops/s", f"{op} p50/p99/p99.9 ms"]
    head += ["LIST keys/s", "LIST '/' entries/s", "RssAnon rest/fill/small MiB",
             "RssFile rest/fill/small MiB", "LMDB B/object", "snapshot", "restart s",
             "catch-up s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['objects']:,}", ops(r.get("fill")), lat(r.get("fill"))]
        for op in ("put", "get", "head", "delete"):
            f = r["small"][op]
            cells += [ops(f), lat(f)]
        cells += [ops(r["list"]), ops(r["list_delimited"])]
        for k in ("RssAnon", "RssFile"):
            cells.append(f"{r['rest_mib'][k]:.0f}/{r['fill_peak_mib'][k]:.0f}/"
                         f"{r['small_peak_mib'][k]:.0f}")
        per = r["lmdb_bytes_per_object"]
        cells.append(f"{per:,.0f}" if per else "-")
        s, file_bytes = r["snapshot"], r.get("snapshot_file_bytes")
        if s:
            records = f", {s['records']:,} rec" if "records" in s else ""
            cells.append(f"{s['bytes'] / MIB:.1f} MiB{records}, {s['ms']} ms "
                         f"({s['builds_logged']} built)")
        elif file_bytes:
            cells.append(f"not logged; file {file_bytes / MIB:.1f} MiB")
        else:
            cells.append("none yet")
        cells.append(f"{r['restart_s']:.2f}")
        c = catch if (catch and r is rows[-1]) else None
        cells.append(f"{c['seconds']:.1f}" if c else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interrupted(_signum, _frame) -> None:
    """SIGTERM ends the run like Ctrl-C: through the cleanup in main."""
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/hamster", help="hamster binary")
    ap.add_argument("--levels", default="10000,100000,1000000",
                    help="comma-separated object counts, increasing")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per timed figure")
    ap.add_argument("--no-catch-up", action="store_true", help="skip the joining member")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON, not a table")
    ap.add_argument("--keep-data", action="store_true", help="leave the temporary dir")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not levels or levels != sorted(set(levels)) or levels[0] <= 0:
        ap.error("--levels must be increasing positive counts")

    signal.signal(signal.SIGTERM, interrupted)
    # Also when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    base = Path(tempfile.mkdtemp(prefix="hamster-metadata-scale-"))
    logs = base / "logs"
    logs.mkdir()
    procs = Procs()
    ctx: dict = {"procs": procs, "base": base, "logs": logs}
    rows: list[dict] = []
    catch = None
    mem = None
    status = 0
    try:
        node = Node(procs, args.bin, base / "node", logs, "node")
        ctx["node"] = node
        log(f"starting a node in {node.data}")
        node.start()
        mem = Memory(node)
        ctx["mem"] = mem
        ctx["bench"] = Bench(procs, args.bin, node, node.data / "credentials")
        filled = 0
        for level in levels:
            row, filled = measure_level(level, filled, ctx, args)
            rows.append(row)
            log(f"level {level}: done; restart {row['restart_s']:.2f}s")
        if not args.no_catch_up:
            log(f"catch-up of a new member at {levels[-1]} objects")
            catch = catch_up(ctx, args)
            log(f"caught up in {catch['seconds']:.1f}s")
    except KeyboardInterrupt:
        log("interrupted; stopping what was started")
        status = 130
    except Exception as e:  # noqa: BLE001 - reported, then cleaned up
        log(f"error: {e}")
        status = 1
    finally:
        if mem is not None:
            mem.close()
        procs.stop_all()
        try:
            # The figures first: removing millions of shard files takes minutes.
            if args.json:
                print(json.dumps({"levels": rows, "catch_up": catch}, indent=1), flush=True)
            elif rows:
                print(table(rows, catch))
                if catch:
                    print(f"\ncatch-up at {rows[-1]['objects']:,} objects: {catch}", flush=True)
        finally:
            if args.keep_data:
                log(f"data left in {base}")
            else:
                log(f"removing {base}")
                shutil.rmtree(base, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
