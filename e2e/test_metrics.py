"""The admin endpoint's /metrics tells an operator exactly what the S3 front did.

Proves that /metrics is valid Prometheus text (it is parsed with the official Python client's
parser), that after a known sequence of requests (3 PutObject, 2 GetObject, 1 HeadObject of a
missing key, 1 ListObjectsV2) the per-operation request counters grew by exactly those amounts
with the right status codes, that the duration histogram counted the same requests, that byte
counters grew by at least the payload moved, and that the Raft gauges show this single node as
the leader of a live term. /health and /ready answer 200 on a serving node.
"""

from __future__ import annotations

import math
import time

import pytest
import requests
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families


def scrape(node) -> list:
    r = requests.get(node.admin_url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain")
    samples = []
    for family in text_string_to_metric_families(r.text):
        samples.extend(family.samples)
    return samples


def value(samples, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    total = 0.0
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def present(samples, name: str) -> bool:
    return any(s.name == name for s in samples)


@pytest.fixture
def node(node_factory):
    return node_factory("metrics")


def test_health_and_ready(node):
    assert requests.get(node.admin_url + "/health", timeout=10).status_code == 200
    assert requests.get(node.admin_url + "/ready", timeout=10).status_code == 200


def test_request_counters_count_exactly(node):
    s3 = node.client()
    s3.create_bucket(Bucket="metered")
    bodies = [b"a" * 1000, b"b" * 20000, b"c" * 300000]

    before = scrape(node)
    for i, body in enumerate(bodies):
        s3.put_object(Bucket="metered", Key=f"k{i}", Body=body)
    got = s3.get_object(Bucket="metered", Key="k1")["Body"].read()
    got += s3.get_object(Bucket="metered", Key="k2")["Body"].read()
    with pytest.raises(ClientError):
        s3.head_object(Bucket="metered", Key="missing")
    s3.list_objects_v2(Bucket="metered")
    after = scrape(node)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    req = "hamster_s3_requests_total"
    assert delta(req, op="PutObject", code="200") == 3
    assert delta(req, op="GetObject", code="200") == 2
    assert delta(req, op="HeadObject", code="404") == 1
    assert delta(req, op="ListObjectsV2", code="200") == 1
    assert delta(req, op="HeadObject", code="200") == 0
    assert delta(req, op="DeleteObject") == 0
    # Nothing else was requested in between.
    assert delta(req) == 7

    dur = "hamster_s3_request_duration_seconds"
    assert delta(dur + "_count", op="PutObject") == 3
    assert delta(dur + "_count", op="GetObject") == 2
    assert delta(dur + "_bucket", op="PutObject", le="+Inf") == 3
    assert delta(dur + "_sum", op="PutObject") > 0

    assert delta("hamster_s3_bytes_in_total") >= sum(len(b) for b in bodies)
    assert delta("hamster_s3_bytes_out_total") >= len(got) == 320000


def test_raft_and_storage_gauges(node):
    s3 = node.client()
    s3.create_bucket(Bucket="gauges")
    s3.put_object(Bucket="gauges", Key="blob", Body=b"z" * 50000)

    deadline = time.monotonic() + 10
    while True:
        samples = scrape(node)
        if value(samples, "hamster_shard_bytes") >= 50000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    for name in ("hamster_raft_term", "hamster_raft_commit_index",
                 "hamster_raft_applied_index", "hamster_raft_is_leader",
                 "hamster_shard_bytes"):
        assert present(samples, name), f"{name} missing from /metrics"
    assert value(samples, "hamster_raft_is_leader") == 1
    assert value(samples, "hamster_raft_term") >= 1
    commit = value(samples, "hamster_raft_commit_index")
    applied = value(samples, "hamster_raft_applied_index")
    # A bucket and an object were committed through Raft.
    assert commit >= 2
    assert 2 <= applied <= commit
    assert value(samples, "hamster_shard_bytes") >= 50000
    assert all(math.isfinite(s.value) for s in samples if s.name.startswith("hamster_raft"))
