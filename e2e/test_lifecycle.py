"""The `hamster` command behaves as an operator expects over a node's life.

Proves, by running the real binary: `version`, `--version` and `-h` describe the program and
list the verbs; operator verbs find the node through the config file; `init` founds a cluster, prints the S3 credentials it stored (mode 0600, AWS shared-credentials
format) and refuses a second time; `serve` on an empty directory initialises and prints the S3
endpoint and keys, or adopts keys given in HAMSTER_ACCESS_KEY/HAMSTER_SECRET_KEY; `status` shows
the node as the single voter and leader; errors are a single line on stderr with a nonzero exit;
SIGTERM and SIGINT stop the node with exit code 0 within seconds and a restart keeps every
bucket and object; `--no-s3` serves no S3 at all; private keys under DIR/tls are mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import tomllib

import pytest
import requests

import harness

VERBS = ("init", "serve", "status", "version")


def workspace_version() -> str:
    with open(harness.REPO_ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def one_line_error(proc) -> str:
    err = proc.stderr.strip()
    assert proc.returncode != 0
    assert err, "no error message on stderr"
    assert len(err.splitlines()) == 1, f"error is not one line:\n{err}"
    return err


def printed_keys(text: str) -> tuple[str, str]:
    ak = re.search(r"access key:\s*(\S+)", text, re.IGNORECASE)
    sk = re.search(r"secret key:\s*(\S+)", text, re.IGNORECASE)
    assert ak and sk, f"credentials not printed:\n{text}"
    return ak.group(1), sk.group(1)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def node_id(data_dir) -> str:
    """The node id as operators see it: 16 hex digits (node.json may hold it as a number)."""
    info = json.loads((data_dir / "node.json").read_text())
    for k in ("node_id", "id"):
        if k in info:
            v = info[k]
            return f"{v:016x}" if isinstance(v, int) else str(v)
    raise AssertionError(f"no node id in node.json: {info}")


def test_version():
    proc = harness.run_cli(["version"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert workspace_version() in out
    assert re.search(r"commit", out, re.IGNORECASE), out
    assert re.search(r"protocol", out, re.IGNORECASE), out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_flag_answers_like_the_verb(flag):
    proc = harness.run_cli([flag])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == harness.run_cli(["version"]).stdout.strip()


def test_operator_verbs_find_the_data_dir_through_the_config_file(node_factory, tmp_path):
    node = node_factory("by-config")
    conf = tmp_path / "hamster.toml"
    conf.write_text(f'data = "{node.data_dir}"\n')
    nid = json.loads(harness.run_cli(["status", "--json", "--data", str(node.data_dir)]).stdout)[
        "node_id"]
    for args, env in ((["status", "--json"], {"HAMSTER_CONFIG": str(conf)}),
                      (["status", "--json", "--config", str(conf)], None)):
        proc = harness.run_cli(args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["node_id"] == nid
    # Other verbs too: a token minted through the config file's data dir.
    proc = harness.run_cli(["token", "--config", str(conf)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("hamster-join-1.")


def test_repair_of_a_bucket_that_does_not_exist_is_an_error(node_factory):
    node = node_factory("repair-nosuch")
    proc = harness.run_cli(["repair", "--bucket", "nosuch", "--data", str(node.data_dir)])
    err = one_line_error(proc)
    assert "no bucket named nosuch" in err, err


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_verbs(flag):
    proc = harness.run_cli([flag])
    assert proc.returncode == 0, proc.stderr
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\b", proc.stdout, re.MULTILINE), \
            f"verb {verb} not listed:\n{proc.stdout}"


def test_unknown_verb_fails():
    proc = harness.run_cli(["frobnicate"])
    assert proc.returncode != 0
    assert proc.stderr.strip()


def test_init_prints_and_stores_credentials_and_refuses_twice(tmp_path):
    data = tmp_path / "data"
    first = harness.run_cli(["init", "--data", str(data)])
    assert first.returncode == 0, first.stderr
    ak, sk = printed_keys(first.stdout)
    assert len(ak) >= 16 and len(sk) >= 30

    cred = data / "credentials"
    assert mode(cred) == 0o600
    text = cred.read_text()
    # Comment lines are allowed in the shared-credentials format; the profile comes first.
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0] == "[default]", text
    assert re.search(rf"^aws_access_key_id = {re.escape(ak)}$", text, re.MULTILINE), text
    assert re.search(rf"^aws_secret_access_key = {re.escape(sk)}$", text, re.MULTILINE)
    assert harness.read_credentials(data) == (ak, sk)

    tls = data / "tls"
    keys = [p for p in tls.iterdir() if p.is_file() and "key" in p.name.lower()]
    assert keys, f"no private key under {tls}: {[p.name for p in tls.iterdir()]}"
    for p in keys:
        assert mode(p) == 0o600, f"{p.name} has mode {oct(mode(p))}"

    second = harness.run_cli(["init", "--data", str(data)])
    one_line_error(second)
    assert harness.read_credentials(data) == (ak, sk), "a refused init changed the credentials"


def test_init_adopts_keys_from_environment(tmp_path):
    data = tmp_path / "data"
    ak, sk = harness.random_key_pair()
    proc = harness.run_cli(["init", "--data", str(data)],
                           env={"HAMSTER_ACCESS_KEY": ak, "HAMSTER_SECRET_KEY": sk})
    assert proc.returncode == 0, proc.stderr
    assert printed_keys(proc.stdout)[0] == ak
    assert harness.read_credentials(data) == (ak, sk)


def test_serve_on_empty_dir_initialises_and_prints_endpoint(node_factory):
    node = node_factory("fresh", creds=False)
    out = node.stdout()
    assert re.search(rf"S3 endpoint:.*{re.escape(node.s3_addr)}", out), out
    ak, sk = printed_keys(out)
    assert harness.read_credentials(node.data_dir) == (ak, sk)
    assert mode(node.data_dir / "credentials") == 0o600
    # The printed keys are the ones that work.
    node.client(access_key=ak, secret_key=sk).list_buckets()


def test_serve_adopts_keys_from_environment(node_factory):
    node = node_factory("envkeys")
    assert harness.read_credentials(node.data_dir) == (node.access_key, node.secret_key)
    assert printed_keys(node.stdout())[0] == node.access_key
    node.client().list_buckets()


def test_status_shows_single_voter_leader(node_factory):
    node = node_factory("status")
    proc = harness.run_cli(["status", "--data", str(node.data_dir)])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    nid = node_id(node.data_dir)
    assert nid in out, f"node id {nid} not in status:\n{out}"
    assert re.search(r"leader", out, re.IGNORECASE), out
    assert re.search(r"voter", out, re.IGNORECASE), out
    assert re.search(r"term", out, re.IGNORECASE), out
    assert re.search(r"commit", out, re.IGNORECASE), out
    assert node.s3_addr in out, out
    assert node.admin_addr in out, out
    leader_lines = [ln for ln in out.splitlines() if re.search(r"leader", ln, re.IGNORECASE)]
    assert any(nid in ln for ln in leader_lines), f"leader is not {nid}:\n{out}"


def test_status_on_uninitialised_dir_is_one_line_error(tmp_path):
    for path in (tmp_path / "nonexistent", tmp_path):
        proc = harness.run_cli(["status", "--data", str(path)])
        err = one_line_error(proc)
        assert re.search(r"initiali[sz]ed", err, re.IGNORECASE), err


def test_status_of_stopped_node_fails(node_factory):
    node = node_factory("stopped")
    node.stop()
    proc = harness.run_cli(["status", "--data", str(node.data_dir)], timeout=60)
    one_line_error(proc)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_restart_keeps_data(node_factory, sig):
    node = node_factory("restart")
    s3 = node.client()
    s3.create_bucket(Bucket="durable")
    payload = os.urandom(300_000)
    s3.put_object(Bucket="durable", Key="dir/blob.bin", Body=payload,
                  Metadata={"kept": "yes"})
    s3.put_object(Bucket="durable", Key="small", Body=b"tiny")
    creds = harness.read_credentials(node.data_dir)

    code, killed = node.stop(sig, timeout=10)
    assert not killed, f"node did not exit within 10s of {sig.name}"
    assert code == 0, f"exit code {code} after {sig.name}"

    node.start()
    assert harness.read_credentials(node.data_dir) == creds
    s3 = node.client()
    assert "durable" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert sorted(o["Key"] for o in harness.list_all_keys(s3, "durable")) == \
        ["dir/blob.bin", "small"]
    got = s3.get_object(Bucket="durable", Key="dir/blob.bin")
    assert got["Body"].read() == payload
    assert got["Metadata"] == {"kept": "yes"}
    assert s3.get_object(Bucket="durable", Key="small")["Body"].read() == b"tiny"
    # The restarted node is writable too.
    s3.put_object(Bucket="durable", Key="after", Body=b"after restart")
    assert s3.get_object(Bucket="durable", Key="after")["Body"].read() == b"after restart"
    # A restart does not print a fresh set of credentials.
    assert "secret key" not in node.stdout(start=2).lower()


def test_no_s3_serves_admin_but_no_s3(node_factory):
    node = node_factory("nos3", start=False, no_s3=True)
    node.start(wait=False)
    node.wait_ready(path="/health")
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", node.s3_port)) != 0, "S3 port is listening"
    assert requests.get(node.admin_url + "/metrics", timeout=10).status_code == 200
    code, killed = node.stop()
    assert (code, killed) == (0, False)


def test_second_node_on_busy_ports_fails_fast(node_factory, tmp_path):
    node = node_factory("busy")
    other = harness.Node(tmp_path / "other", tmp_path / "logs", name="other")
    other.s3_port, other.admin_port = node.s3_port, node.admin_port
    try:
        other.start(wait=False)
        try:
            code = other.proc.wait(30)
        except Exception:
            pytest.fail("a node whose ports are taken kept running")
        assert code != 0
        assert other.stderr().strip()
    finally:
        other.stop()
        if other in harness.ACTIVE_NODES:
            harness.ACTIVE_NODES.remove(other)
