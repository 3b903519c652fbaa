"""Fixtures for the end-to-end suite: real `hamster` processes on loopback, real S3 clients.

- `node_factory` makes nodes owned by one test; they are stopped (SIGTERM, then SIGKILL) when the
  test ends, pass or fail.
- `shared_node` is one node per test module for the S3 compatibility tests; `s3` is a boto3
  client for it and `bucket` a fresh bucket per test.
- When a test fails, the tails of every involved node's stdout/stderr are attached to its report.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import harness
from harness import Node


def pytest_configure(config):
    # Keep the developer's own AWS settings out of every client this suite builds.
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and rep.when in ("setup", "call"):
        for node in harness.ACTIVE_NODES:
            rep.sections.append((f"hamster node {node.name}", node.report()))


def _forget(nodes):
    for n in nodes:
        n.stop()
        if n in harness.ACTIVE_NODES:
            harness.ACTIVE_NODES.remove(n)


@pytest.fixture
def node_factory(tmp_path):
    """Make nodes for this test: `node_factory(name, start=True, creds=True, no_s3=False,
    token=None, extra_args=None)`; with a token the node joins that cluster (and gets no
    credentials of its own); `extra_args` are further `serve` flags."""
    made: list[Node] = []

    def make(name: str = "node", start: bool = True, creds: bool = True,
             no_s3: bool = False, data_dir: Path | None = None,
             token: str | None = None, extra_args: list[str] | None = None) -> Node:
        ak, sk = harness.random_key_pair() if creds and not token else (None, None)
        node = Node(data_dir or tmp_path / f"{name}-data", tmp_path / "logs", name=name,
                    access_key=ak, secret_key=sk, no_s3=no_s3, token=token,
                    extra_args=extra_args)
        made.append(node)
        if start:
            node.start()
        return node

    yield make
    _forget(made)


@pytest.fixture(scope="module")
def shape(request):
    """How many nodes serve the module's `shared_node`: "one", or "three" (a cluster)."""
    return getattr(request, "param", "one")


def pytest_generate_tests(metafunc):
    # The real-client compatibility suites run against one node and against a three-node
    # cluster (through a node that is not the founder), where objects are erasure-coded.
    if metafunc.module.__name__.startswith("test_compat_") and "shared_node" in metafunc.fixturenames:
        metafunc.parametrize("shape", ["one", "three"], indirect=True, scope="module")


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory, shape):
    base = tmp_path_factory.mktemp("shared")
    if shape == "three":
        import cluster

        made: list[Node] = []
        try:
            nodes, _ = cluster.form(cluster.local_factory(base, made), "shared")
            via = nodes[1]
            # Joiners hold no credentials of their own: talk to this one with the founder's.
            via.access_key, via.secret_key = nodes[0].access_key, nodes[0].secret_key
            yield via
        finally:
            _forget(made)
        return
    ak, sk = harness.random_key_pair()
    node = Node(base / "data", base / "logs", name="shared", access_key=ak, secret_key=sk)
    try:
        node.start()
        yield node
    finally:
        _forget([node])


@pytest.fixture(scope="module")
def s3(shared_node):
    return shared_node.client()


def unique_bucket(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(s3):
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    yield name
    try:
        harness.empty_and_delete_bucket(s3, name)
    except Exception:  # best effort: the node may be gone if the test failed badly
        pass
