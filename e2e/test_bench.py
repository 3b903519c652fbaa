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


def test_fill_keeps_its_objects_and_list_existing_counts_them(node):
    """A fill writes exactly --count objects in blocks of 100 and leaves them (and the bucket
    it created) in place; list-existing then lists them without errors, by key and, with a
    delimiter, by block."""
    n = 250
    r = harness.run_cli(
        ["bench", "--endpoint", node.endpoint, "--access-key", node.access_key,
         "--secret-key", node.secret_key, "--bucket", "fill-e2e", "--workload", "fill",
         "--count", str(n), "--concurrency", "1", "--json", "--quiet"],
        timeout=180)
    assert r.returncode == 0, r.stderr
    fill = figures(r.stdout)[f"FILL {n} x 4KiB c=1"]
    assert (fill["ops"], fill["errors"], fill["bytes"]) == (n, 0, n * 4096), fill
    assert f"kept: {n} filled object(s) under s3://fill-e2e/fill/" in r.stderr, r.stderr
    s3 = node.client()
    keys = [o["Key"] for o in harness.list_all_keys(s3, "fill-e2e")]
    assert len(keys) == n and all(k.startswith("fill/") for k in keys), keys[:5]
    dirs = s3.list_objects_v2(Bucket="fill-e2e", Prefix="fill/", Delimiter="/")
    assert len(dirs.get("CommonPrefixes", [])) == 3, dirs  # blocks 0, 1 and 2 of one worker

    for extra, unit in (([], "keys/s"), (["--delimiter", "/"], "entries/s")):
        r = harness.run_cli(
            ["bench", "--endpoint", node.endpoint, "--access-key", node.access_key,
             "--secret-key", node.secret_key, "--bucket", "fill-e2e",
             "--workload", "list-existing", "--prefix", "fill/", *extra, "--duration", "1",
             "--json", "--quiet"],
            timeout=60)
        assert r.returncode == 0, r.stderr
        (f,) = figures(r.stdout).values()
        assert f["errors"] == 0 and f["unit"] == unit and f["value"] > 0, f
    # Listing wrote nothing and removed nothing.
    assert len(harness.list_all_keys(s3, "fill-e2e")) == n
