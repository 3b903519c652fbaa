"""`hamster bench` against a live node: it creates its bucket, makes exactly the requests it was
bounded to, reports them as JSON figures without errors, and cleans up after itself.

Its numbers are not checked (a benchmark is not a timed test); what is checked is what an
operator relies on when reading them: every figure counts its requests, failed requests are
reported, and the bucket is left as it was found. `--quick-ack` (used by the side-by-side
scripts against other servers) must not change any of that.
"""

from __future__ import annotations

import json

import pytest

import harness

COUNT = 40


@pytest.fixture
def node(node_factory):
    return node_factory("bench")


def bench(node, *extra: str, secret: str | None = None):
    return harness.run_cli(
        ["bench", "--endpoint", node.endpoint, "--region", harness.REGION,
         "--access-key", node.access_key, "--secret-key", secret or node.secret_key,
         "--bucket", "bench-e2e", "--count", str(COUNT), "--duration", "30",
         "--concurrency", "4", "--json", "--quiet", *extra],
        timeout=180)


def figures(stdout: str) -> dict[str, dict]:
    out = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            f = json.loads(line)
            out[f["label"]] = f
    return out


@pytest.mark.parametrize("quick_ack", [False, True], ids=["plain", "quick-ack"])
def test_small_workload_counts_every_request_and_cleans_up(node, quick_ack):
    extra = ["--workload", "small"] + (["--quick-ack"] if quick_ack else [])
    r = bench(node, *extra)
    assert r.returncode == 0, r.stderr
    got = figures(r.stdout)
    for op in ("PUT", "GET", "HEAD", "DELETE"):
        for c in (4, 64):
            f = got[f"{op} 4KiB c={c}"]
            assert f["errors"] == 0, f
            assert f["ops"] == COUNT, f
            assert f["value"] > 0, f
    gets = got["GET 4KiB c=4"]
    assert gets["bytes"] == COUNT * 4096
    # The bucket it created is gone again, and nothing it wrote is left behind.
    s3 = node.client()
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "bench-e2e" not in names


def test_wrong_secret_is_one_line_and_a_failure(node):
    r = bench(node, "--workload", "small", secret="not-the-secret-key-at-all")
    assert r.returncode != 0
    assert r.stdout.strip() == ""
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1, r.stderr
