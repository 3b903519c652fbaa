"""A flood of idle and stalled connections on the cluster port does not lock members out.

Three nodes form a cluster. A flood then holds 300 TCP connections to A's cluster port: most
send nothing, every fourth sends the first bytes of a TLS ClientHello and stalls. Whenever A
closes one of them, the flood opens another at once, as an attacker would, so the flood keeps
its full strength for as long as it is held (the number of reopens is capped). While it is held:

- `hamster status` against A answers, within a bound, and lists every member;
- a node with a fresh token minted on A joins through A (not through another member);
- a member restarted during the flood rejoins, and every member's status agrees on members,
  leader and term;
- A stays up, and its log names the flood at WARN without a line per connection.

The sockets are closed at the end. Before this, A refused every connection past 256 and let
each idle one hold its slot for 10 s, so under a held flood `hamster status` and joins failed,
and the joiner blamed the token ("is not a member of the cluster the token names").

The time `hamster status` takes with and without the flood is printed (run pytest with -s).
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import threading
import time

import cluster
import harness

FLOOD_CONNECTIONS = 300
# Every n-th flood connection sends the start of a ClientHello and then stalls.
PARTIAL_HELLO_EVERY = 4
# The flood stops reopening after this many reopens, so a broken server cannot keep the test
# busy forever.
REOPENS_MAX = 2_000_000
# A member's CLI must still get an answer this fast under the flood.
STATUS_UNDER_FLOOD_S_MAX = 5.0
STATUS_SAMPLES = 5
# The flood counts as established once A has closed, and the flood reopened, this many of its
# connections (or after this long).
FLOOD_WARMUP_REOPENS = 200
FLOOD_WARMUP_S_MAX = 10.0

# A TLS record header for a 512-byte handshake record, a ClientHello header announcing 508
# bytes, the client version and the first bytes of the random: a real start that never ends.
PARTIAL_CLIENT_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]) \
    + bytes(range(16))


class Flood:
    """Holds `count` connections open to 127.0.0.1:`port` on a background thread and reopens
    any the server closes, up to REOPENS_MAX reopens."""

    def __init__(self, port: int, count: int = FLOOD_CONNECTIONS):
        self.port = port
        self.count = count
        self.opened = 0
        self.reopens = 0
        self.failed_opens = 0
        self.selector = selectors.DefaultSelector()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cluster-port-flood", daemon=True)

    def _open(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.failed_opens += 1
            return
        s.setblocking(False)
        self.opened += 1
        if self.opened % PARTIAL_HELLO_EVERY == 0:
            try:
                s.send(PARTIAL_CLIENT_HELLO)
            except OSError:
                pass
        self.selector.register(s, selectors.EVENT_READ)

    def _close(self, s: socket.socket) -> None:
        self.selector.unregister(s)
        s.close()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            missing = self.count - len(self.selector.get_map())
            for _ in range(missing):
                if self.reopens >= REOPENS_MAX:
                    break
                self._open()
                self.reopens += 1
            for key, _ in self.selector.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                # The server says nothing to a client that has not finished its hello, so any
                # readable event is the server closing (or cutting) the connection.
                if not data:
                    self._close(s)
            if self.failed_opens and not self.selector.get_map():
                time.sleep(0.05)

    def __enter__(self) -> "Flood":
        for _ in range(self.count):
            self._open()
        assert len(self.selector.get_map()) == self.count, "could not open the flood"
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(10)
        for key in list(self.selector.get_map().values()):
            self._close(key.fileobj)
        self.selector.close()


def timed_status(node) -> tuple[float, dict]:
    t0 = time.monotonic()
    r = harness.run_cli(["status", "--json", "--data", str(node.data_dir)], timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0, f"`hamster status` on {node.name} failed: {r.stderr}"
    return took, json.loads(r.stdout)


def status_times(node, members: set[str]) -> list[float]:
    times = []
    for _ in range(STATUS_SAMPLES):
        took, report = timed_status(node)
        assert {m["node_id"] for m in report["members"]} == members, report
        times.append(took)
    return times


def describe(times: list[float]) -> str:
    return (f"median {statistics.median(times) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms over {len(times)} runs")


def test_cluster_port_flood_does_not_lock_out_members(node_factory):
    (a, b, c), reports = cluster.form(node_factory, "flood", n=3)
    members = {r["node_id"] for r in reports}
    calm = status_times(a, members)

    with Flood(a.cluster_port) as flood:
        # Let the flood fill the port and A start closing flood connections (which the flood
        # reopens) before anyone legitimate arrives.
        deadline = time.monotonic() + FLOOD_WARMUP_S_MAX
        while flood.reopens < FLOOD_WARMUP_REOPENS and time.monotonic() < deadline:
            time.sleep(0.1)
        stormy = status_times(a, members)
        assert max(stormy) < STATUS_UNDER_FLOOD_S_MAX, describe(stormy)

        # A joiner with a token minted on A joins through A itself.
        token = cluster.mint(a)
        d = node_factory("flood-d", token=token)
        assert "trying the next" not in d.stderr(), d.stderr_tail()

        # A member restarted during the flood reconnects to A and the cluster agrees.
        c.restart()
        cluster.wait_agreed([a, b, c, d])
        assert a.running()
        reopened = flood.reopens

    print(f"\n`hamster status` on a 3-node cluster: without flood {describe(calm)}; "
          f"under a held flood of {FLOOD_CONNECTIONS} connections "
          f"({reopened} reopened) {describe(stormy)}")
    # The flood was really held: A closed flood connections and the flood replaced them.
    assert reopened >= FLOOD_WARMUP_REOPENS
    warned = [line for line in a.stderr().splitlines()
              if "cluster port" in line and "WARN" in line]
    assert warned, "A did not report the flood"
    assert len(warned) < 50, f"A logged {len(warned)} WARN lines for the flood"
