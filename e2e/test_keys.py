"""Access keys and per-bucket grants, end to end through `hamster key` and real S3 clients.

Proves that a key minted with `hamster key create` shows its secret once and never again, that
a key with no grants sees no buckets and reads nothing, that `allow`/`deny` add and take away
exactly the read/write bits named, that a bucket a key creates is its own, that deleting a key
makes its signature unknown, and that keys and grants are Raft state that survives a restart.
"""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

import harness


def key_cli(node, *args: str):
    return harness.run_cli(["key", *args, "--data", str(node.data_dir)])


def create_key(node, name: str) -> tuple[str, str]:
    r = key_cli(node, "create", name)
    assert r.returncode == 0, r.stderr
    ak = re.search(r"^access key:\s+(\S+)$", r.stdout, re.M)
    sk = re.search(r"^secret key:\s+(\S+)$", r.stdout, re.M)
    assert ak and sk, r.stdout
    assert "shown only now" in r.stdout
    return ak.group(1), sk.group(1)


def denied(call, code: str = "AccessDenied") -> None:
    with pytest.raises(ClientError) as e:
        call()
    assert harness.error_code(e.value) == code, e.value.response
    assert harness.http_status(e.value) == 403


def bucket_names(client) -> list[str]:
    return [b["Name"] for b in client.list_buckets()["Buckets"]]


def test_create_prints_secret_once_and_list_hides_it(node_factory):
    node = node_factory("keys-create")
    ak, sk = create_key(node, "app")
    assert re.fullmatch(r"HK[A-Z0-9]{18}", ak)
    assert len(sk) == 40

    listed = key_cli(node, "list")
    assert listed.returncode == 0, listed.stderr
    row = [line for line in listed.stdout.splitlines() if line.startswith("app ")]
    assert len(row) == 1 and ak in row[0], listed.stdout
    assert sk not in listed.stdout
    assert node.secret_key not in listed.stdout
    assert "root" in listed.stdout

    again = key_cli(node, "create", "app")
    assert again.returncode != 0
    assert "exists already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    last_root = key_cli(node, "delete", "root")
    assert last_root.returncode != 0
    assert "last root key" in last_root.stderr


def test_grants_decide_what_a_key_may_do(node_factory):
    node = node_factory("keys-grants")
    root = node.client()
    root.create_bucket(Bucket="shared")
    root.put_object(Bucket="shared", Key="doc.txt", Body=b"for readers")
    ak, sk = create_key(node, "app")
    app = node.client(ak, sk)

    # No grants: sees nothing, reads nothing, writes nothing.
    assert bucket_names(app) == []
    denied(lambda: app.get_object(Bucket="shared", Key="doc.txt"))
    denied(lambda: app.list_objects_v2(Bucket="shared"))
    denied(lambda: app.put_object(Bucket="shared", Key="x", Body=b"x"))

    none = key_cli(node, "allow", "app", "--bucket", "shared")
    assert none.returncode != 0 and "at least one" in none.stderr
    missing = key_cli(node, "allow", "app", "--bucket", "nope", "--read")
    assert missing.returncode != 0 and "no bucket named nope" in missing.stderr

    # Read: may list and get, may not put or delete.
    assert key_cli(node, "allow", "app", "--bucket", "shared", "--read").returncode == 0
    assert bucket_names(app) == ["shared"]
    assert app.get_object(Bucket="shared", Key="doc.txt")["Body"].read() == b"for readers"
    assert [o["Key"] for o in app.list_objects_v2(Bucket="shared")["Contents"]] == ["doc.txt"]
    denied(lambda: app.put_object(Bucket="shared", Key="x", Body=b"x"))
    denied(lambda: app.delete_object(Bucket="shared", Key="doc.txt"))
    denied(lambda: app.delete_bucket(Bucket="shared"))

    # Write on top of read.
    assert key_cli(node, "allow", "app", "--bucket", "shared", "--write").returncode == 0
    app.put_object(Bucket="shared", Key="from-app.txt", Body=b"written by app")
    assert root.get_object(Bucket="shared", Key="from-app.txt")["Body"].read() == \
        b"written by app"
    listed = key_cli(node, "list").stdout
    assert "shared:rw-" in listed, listed

    # Deny with no flag takes everything away again.
    assert key_cli(node, "deny", "app", "--bucket", "shared").returncode == 0
    denied(lambda: app.get_object(Bucket="shared", Key="doc.txt"))
    denied(lambda: app.put_object(Bucket="shared", Key="y", Body=b"y"))
    assert bucket_names(app) == []

    # Deleting the key makes its signature unknown.
    gone = key_cli(node, "delete", "app")
    assert gone.returncode == 0, gone.stderr
    denied(lambda: app.list_buckets(), "InvalidAccessKeyId")
    assert "app " not in key_cli(node, "list").stdout


def test_created_bucket_is_owned_and_keys_survive_restart(node_factory):
    node = node_factory("keys-own")
    ak, sk = create_key(node, "maker")
    oak, osk = create_key(node, "other")
    maker = node.client(ak, sk)
    other = node.client(oak, osk)

    maker.create_bucket(Bucket="made-by-key")
    maker.put_object(Bucket="made-by-key", Key="k", Body=b"mine")
    assert bucket_names(maker) == ["made-by-key"]
    assert "made-by-key:rwo" in key_cli(node, "list").stdout
    # Another key sees none of it; root sees it.
    assert bucket_names(other) == []
    denied(lambda: other.get_object(Bucket="made-by-key", Key="k"))
    assert "made-by-key" in bucket_names(node.client())

    node.restart()
    maker = node.client(ak, sk)
    other = node.client(oak, osk)
    listed = key_cli(node, "list")
    assert listed.returncode == 0, listed.stderr
    assert "maker" in listed.stdout and "made-by-key:rwo" in listed.stdout
    assert maker.get_object(Bucket="made-by-key", Key="k")["Body"].read() == b"mine"
    denied(lambda: other.get_object(Bucket="made-by-key", Key="k"))

    # The owner may delete its bucket; its grant goes with it.
    maker.delete_object(Bucket="made-by-key", Key="k")
    maker.delete_bucket(Bucket="made-by-key")
    assert bucket_names(maker) == []
    assert "made-by-key" not in key_cli(node, "list").stdout


def test_copy_needs_read_on_source(node_factory):
    node = node_factory("keys-copy")
    root = node.client()
    root.create_bucket(Bucket="src")
    root.create_bucket(Bucket="dst")
    root.put_object(Bucket="src", Key="a", Body=b"copy me")
    ak, sk = create_key(node, "copier")
    app = node.client(ak, sk)
    assert key_cli(node, "allow", "copier", "--bucket", "dst", "--write").returncode == 0

    source = {"Bucket": "src", "Key": "a"}
    denied(lambda: app.copy_object(Bucket="dst", Key="b", CopySource=source))
    assert key_cli(node, "allow", "copier", "--bucket", "src", "--read").returncode == 0
    app.copy_object(Bucket="dst", Key="b", CopySource=source)
    assert root.get_object(Bucket="dst", Key="b")["Body"].read() == b"copy me"
    # Read on the source alone does not let it write the target.
    denied(lambda: app.copy_object(Bucket="src", Key="c", CopySource=source))


def test_a_name_taken_by_another_key_is_bucket_already_exists(node_factory):
    node = node_factory("keys-taken")
    ak, sk = create_key(node, "first")
    oak, osk = create_key(node, "second")
    first = node.client(ak, sk)
    second = node.client(oak, osk)
    first.create_bucket(Bucket="taken")
    for client, code in ((second, "BucketAlreadyExists"), (first, "BucketAlreadyOwnedByYou")):
        with pytest.raises(ClientError) as e:
            client.create_bucket(Bucket="taken")
        assert harness.error_code(e.value) == code
        assert harness.http_status(e.value) == 409
    # The refused key gained nothing on the bucket.
    assert bucket_names(second) == []
