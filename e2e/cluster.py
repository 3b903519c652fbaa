"""Helpers for multi-node tests: minting tokens, reading `hamster status`, forming a cluster
and waiting until its members agree."""

from __future__ import annotations

import json
import subprocess
import time

import harness

# Joining, catching up as a learner and promotion to voter, for several joiners in a row.
CONVERGE_TIMEOUT = 60.0


def mint(node) -> str:
    r = harness.run_cli(["token", "--data", str(node.data_dir)])
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def status(node) -> dict | None:
    """The node's `hamster status --json`, or None if it does not answer."""
    if not node.running():
        return None
    r = harness.run_cli(["status", "--json", "--data", str(node.data_dir)], timeout=15)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def agreed(nodes, voters: int | None = None) -> tuple[bool, list]:
    """Whether every node answers, all list exactly these nodes as members, agree on leader
    and term, and have `voters` voters (default: all of them)."""
    reports = [status(n) for n in nodes]
    if any(r is None for r in reports):
        return False, reports
    ids = {r["node_id"] for r in reports}
    want = len(nodes) if voters is None else voters
    for r in reports:
        members = {m["node_id"]: m for m in r["members"]}
        if set(members) != ids:
            return False, reports
        if sum(1 for m in members.values() if m["role"] == "voter") != want:
            return False, reports
    if len({(r["leader"], r["term"]) for r in reports}) != 1 or reports[0]["leader"] is None:
        return False, reports
    return True, reports


def wait_agreed(nodes, voters: int | None = None, timeout: float = CONVERGE_TIMEOUT) -> list:
    deadline = time.monotonic() + timeout
    ok, reports = agreed(nodes, voters)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.5)
        ok, reports = agreed(nodes, voters)
    assert ok, f"members did not agree within {timeout}s: {reports}"
    return reports


def form(node_factory, prefix: str, n: int = 3, extra_args: list[str] | None = None,
         voters: int | None = None) -> tuple[list, list]:
    """A founder and n-1 joiners, once every member agrees on members, leader and term."""
    founder = node_factory(f"{prefix}-0", extra_args=extra_args)
    nodes = [founder]
    for i in range(1, n):
        nodes.append(node_factory(f"{prefix}-{i}", token=mint(founder), extra_args=extra_args))
    reports = wait_agreed(nodes, voters)
    wait_layout(nodes[0], n)
    return nodes, reports


def wait_layout(node, n: int, timeout: float = CONVERGE_TIMEOUT) -> dict:
    """Waits until the data-plane layout lists `n` nodes with no transition open: a member
    takes shards once it has caught up and the leader's layout manager has grown onto it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = status(node)
        if r is not None and r.get("layout"):
            last = r["layout"]
            if len(last["nodes"]) == n and last.get("transition") is None:
                return last
        time.sleep(0.5)
    raise AssertionError(f"the layout did not list {n} nodes within {timeout}s: {last}")


def by_id(nodes, reports) -> dict:
    return {r["node_id"]: n for n, r in zip(nodes, reports)}


def bench(node, creds, workloads: str, duration: float, *extra: str) -> None:
    """Runs `hamster bench` against `node` with `creds`' keys (a node holding credentials)
    and lets it print its table."""
    subprocess.run(
        [harness.hamster_bin(), "bench", "--endpoint", node.endpoint,
         "--access-key", creds.access_key, "--secret-key", creds.secret_key,
         "--workload", workloads, "--duration", str(duration), "--quiet", *extra],
        check=True,
    )


def local_factory(base, made: list):
    """A node factory for scripts outside pytest (benchmarks): nodes under `base`, started at
    once and appended to `made` (the caller stops them); the founder gets a fresh key pair."""

    def make(name: str, token: str | None = None, extra_args: list[str] | None = None):
        ak, sk = harness.random_key_pair() if not token else (None, None)
        node = harness.Node(base / name, base / "logs", name=name, access_key=ak, secret_key=sk,
                            token=token, extra_args=extra_args)
        made.append(node)
        node.start()
        return node

    return make
