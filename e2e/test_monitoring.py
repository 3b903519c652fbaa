"""The shipped Prometheus alerting rules and Grafana dashboard ask only for what Hamster exports.

A rule or panel that names a metric (or a label) no node exports never fires and never draws,
and nobody notices until the day it should have. This test loads `config/hamster-alerts.yml`
and `config/grafana-hamster.json`, checks each rule is complete (expression, severity, summary,
description), and checks every `hamster_*` metric and every label a query groups or filters by
against what the nodes of a running three-node cluster export after some S3 traffic.
"""

from __future__ import annotations

import json
import re
import uuid

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

import cluster
import harness

ALERTS = harness.REPO_ROOT / "config" / "hamster-alerts.yml"
DASHBOARD = harness.REPO_ROOT / "config" / "grafana-hamster.json"

METRIC = re.compile(r"\b(hamster_[a-z0-9_]+)\b")
# `by (a, b)` / `without (a)` groupings and `{a="x", b=~"y"}` matchers.
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"(hamster_[a-z0-9_]+)\s*\{([^}]*)\}")
# Added by Prometheus at scrape time, or by the histogram itself.
IMPLICIT_LABELS = {"job", "instance", "le"}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def exported(nodes) -> dict[str, set[str]]:
    """Every metric family the nodes export, with the label names seen on its samples."""
    out: dict[str, set[str]] = {}
    for node in nodes:
        r = requests.get(node.admin_url + "/metrics", timeout=10)
        assert r.status_code == 200
        for family in text_string_to_metric_families(r.text):
            labels = out.setdefault(family.name, set())
            for s in family.samples:
                # Counters are exported as `<family>_total`; histograms as `_bucket` etc.
                out.setdefault(s.name, set()).update(s.labels)
                labels.update(s.labels)
    return out


def test_alert_rules_are_complete():
    rules = alert_rules()
    assert len(rules) >= 5
    names = [r["alert"] for r in rules]
    assert len(set(names)) == len(names), names
    for r in rules:
        assert r["expr"].strip(), r
        assert r["labels"]["severity"] in {"warning", "critical"}, r
        assert r["annotations"]["summary"].strip(), r
        assert r["annotations"]["description"].strip(), r
    # The failures the operator guide names: a member down, no leader.
    exprs = " ".join(r["expr"] for r in rules)
    assert "hamster_member_up" in exprs and "hamster_raft_is_leader" in exprs


def test_rules_and_panels_name_only_exported_metrics_and_labels(node_factory):
    nodes, _ = cluster.form(node_factory, "mon", n=3)
    ak, sk = nodes[0].access_key, nodes[0].secret_key
    s3 = nodes[0].client(ak, sk)
    bucket = f"mon-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"watched")
    s3.get_object(Bucket=bucket, Key="k")["Body"].read()
    have = exported(nodes)

    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    assert len(exprs) >= 15
    missing, bad_labels = [], []
    for expr in exprs:
        used = METRIC.findall(expr)
        if not used:
            # Only Prometheus' own scrape health may stand without a Hamster metric.
            assert re.fullmatch(r'up\{job="hamster"\} == 0', expr.strip()), expr
            continue
        for name in used:
            if name not in have:
                missing.append((name, expr))
        wanted = set()
        for group in GROUPING.findall(expr):
            wanted.update(x.strip() for x in group.split(",") if x.strip())
        for name, matchers in MATCHERS.findall(expr):
            wanted.update(m.split("=")[0].strip(" !~") for m in matchers.split(",") if m.strip())
        known = set().union(*(have.get(n, set()) for n in used)) | IMPLICIT_LABELS
        bad_labels.extend((label, expr) for label in wanted - known)
    assert not missing, f"rules or panels name metrics no node exports: {missing}"
    assert not bad_labels, f"rules or panels use labels the metrics do not carry: {bad_labels}"
