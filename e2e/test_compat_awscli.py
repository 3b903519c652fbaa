"""Compatibility: the aws CLI (1.x, from e2e/requirements.txt) runs a user's everyday workflows.

Proves, with the stock CLI and its defaults of the day (SigV4, CRC32 checksums on uploads), that
a user can make a bucket, upload a small file and a 50 MiB file that the CLI splits into 8 MiB
parts (the object reports the full size and an S3 multipart ETag, `"<md5 of part md5s>-7"`),
download both byte-identical, read bytes 1000-1099, copy objects server-side (the 50 MiB copy
goes through UploadPartCopy), hand out presigned URLs in both forms the CLI makes (SigV2 query
by default, SigV4 with `signature_version = s3v4`) that a plain HTTP GET can use, sync a tree
with awkward names (spaces, `+`, `=`, `%`, UTF-8, a zero-byte file, nested directories) up and
back down identically, see a second sync upload nothing, and remove objects, everything
recursively and the bucket.

How: the CLI runs as a subprocess against one `hamster serve` on loopback (the module's
`shared_node`), with the node's key only in its environment and a private AWS_CONFIG_FILE, so
nothing from the machine leaks in. Each test has its own bucket and removes it even on failure.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

import compat_data as cd

pytestmark = pytest.mark.slow

PART_BYTES = 8 * cd.MIB


def config_text(extra: str) -> str:
    return ("[default]\n"
            "region = us-east-1\n"
            "s3 =\n"
            "  addressing_style = path\n"
            f"{extra}")


@pytest.fixture(scope="module")
def aws(shared_node, tmp_path_factory):
    """`aws(step, *args)` with the default config; `aws.v4(...)` signs presigned URLs with SigV4."""
    exe = cd.find_program("aws", "pip install -r e2e/requirements.txt", venv=True)
    cfg_dir = tmp_path_factory.mktemp("awscfg")
    cfg = cfg_dir / "config"
    cfg.write_text(config_text("  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n"))
    cfg_v4 = cfg_dir / "config-v4"
    cfg_v4.write_text(config_text("  signature_version = s3v4\n"))

    def env(config: Path) -> dict[str, str]:
        return cd.clean_env({
            "AWS_ACCESS_KEY_ID": shared_node.access_key,
            "AWS_SECRET_ACCESS_KEY": shared_node.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(config),
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
        })

    argv0 = [exe, "--endpoint-url", shared_node.endpoint]
    client = cd.Client("aws", argv0, env(cfg))
    client.v4 = cd.Client("aws(sigv4 config)", argv0, env(cfg_v4))
    return client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("awsdata")
    cd.make_small(root / "small.txt")
    cd.make_big(root / "big.bin")
    cd.make_tree(root / "tree")
    return root


@pytest.fixture
def bucket_name(shared_node):
    name = f"compat-aws-{uuid.uuid4().hex[:12]}"
    yield name
    cd.drop_bucket(shared_node, name)


def bucket_names(out: str) -> list[str]:
    # `aws s3 ls` prints "YYYY-MM-DD hh:mm:ss NAME" per bucket.
    return [line.split()[-1] for line in out.splitlines() if line.strip()]


def objects(out: str) -> dict[str, int]:
    # `aws s3 ls [--recursive] s3://b/` prints "YYYY-MM-DD hh:mm:ss SIZE KEY" per object.
    found = {}
    for line in out.splitlines():
        m = re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +(\d+) (.+)$", line)
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def test_objects_small_multipart_range_copy_presign_remove(aws, data, bucket_name, tmp_path):
    b, small, big = bucket_name, data / "small.txt", data / "big.bin"

    aws("mb", "s3", "mb", f"s3://{b}")
    assert b in bucket_names(aws("ls buckets", "s3", "ls").stdout)

    aws("cp small up", "s3", "cp", str(small), f"s3://{b}/small.txt")
    aws("cp 50 MiB up (multipart, 8 MiB parts)", "s3", "cp", str(big), f"s3://{b}/big.bin")

    head = json.loads(aws("head big", "s3api", "head-object", "--bucket", b,
                          "--key", "big.bin").stdout)
    assert head["ContentLength"] == cd.BIG_BYTES
    assert re.fullmatch(r'"[0-9a-f]{32}-7"', head["ETag"]), head["ETag"]
    assert head["ETag"] == cd.multipart_etag(big, PART_BYTES)

    listed = objects(aws("ls bucket", "s3", "ls", f"s3://{b}/").stdout)
    assert listed == {"small.txt": small.stat().st_size, "big.bin": cd.BIG_BYTES}

    for name, src in (("small.txt", small), ("big.bin", big)):
        dst = tmp_path / f"down-{name}"
        aws(f"cp {name} down", "s3", "cp", f"s3://{b}/{name}", str(dst))
        assert cd.sha256_file(dst) == cd.sha256_file(src), f"{name} came back different"

    out = tmp_path / "range.out"
    meta = json.loads(aws("ranged get bytes=1000-1099", "s3api", "get-object", "--bucket", b,
                          "--key", "big.bin", "--range", "bytes=1000-1099", str(out)).stdout)
    assert out.read_bytes() == cd.read_range(big, cd.RANGE_FIRST, cd.RANGE_LAST)
    assert meta["ContentLength"] == 100
    assert meta["ContentRange"] == f"bytes 1000-1099/{cd.BIG_BYTES}"

    # Server-side copies: the small one is one CopyObject; the 50 MiB one is above the CLI's
    # multipart threshold, so the CLI copies it part by part with UploadPartCopy.
    aws("server-side cp small", "s3", "cp", f"s3://{b}/small.txt", f"s3://{b}/copy of small.txt")
    aws("server-side cp big", "s3", "cp", f"s3://{b}/big.bin", f"s3://{b}/copies/big.bin")
    aws("cp small copy down", "s3", "cp", f"s3://{b}/copy of small.txt",
        str(tmp_path / "copy-small"))
    assert cd.sha256_file(tmp_path / "copy-small") == cd.sha256_file(small)
    copy_head = json.loads(aws("head big copy", "s3api", "head-object", "--bucket", b,
                               "--key", "copies/big.bin").stdout)
    assert copy_head["ContentLength"] == cd.BIG_BYTES
    assert copy_head["ETag"] == cd.multipart_etag(big, PART_BYTES), "not copied in 8 MiB parts"
    aws("cp big copy down", "s3", "cp", f"s3://{b}/copies/big.bin", str(tmp_path / "copy-big"))
    assert cd.sha256_file(tmp_path / "copy-big") == cd.sha256_file(big)

    # Presigned URLs: aws CLI v1's default is the SigV2 query form; s3v4 gives X-Amz-* queries.
    url_v2 = aws("presign (default, SigV2)", "s3", "presign", f"s3://{b}/small.txt",
                 "--expires-in", "300").stdout.strip()
    assert "Signature=" in url_v2 and "X-Amz-Signature" not in url_v2, url_v2
    url_v4 = aws.v4("presign (SigV4)", "s3", "presign", f"s3://{b}/small.txt",
                    "--expires-in", "300").stdout.strip()
    assert "X-Amz-Signature=" in url_v4, url_v4
    for form, url in (("SigV2", url_v2), ("SigV4", url_v4)):
        r = cd.plain_get(url)
        assert r.status_code == 200, f"presigned {form} GET: HTTP {r.status_code}: {r.text[:300]}"
        assert r.content == small.read_bytes(), f"presigned {form} GET returned other bytes"

    aws("rm small", "s3", "rm", f"s3://{b}/small.txt")
    listed = objects(aws("ls after rm", "s3", "ls", "--recursive", f"s3://{b}/").stdout)
    assert set(listed) == {"big.bin", "copy of small.txt", "copies/big.bin"}

    aws("rm --recursive", "s3", "rm", "--recursive", f"s3://{b}/")
    assert objects(aws("ls after rm --recursive", "s3", "ls", "--recursive", f"s3://{b}/",
                       check=False).stdout) == {}
    aws("rb", "s3", "rb", f"s3://{b}")
    assert b not in bucket_names(aws("ls buckets after rb", "s3", "ls").stdout)


def test_sync_tree_up_resync_down(aws, data, bucket_name, tmp_path):
    b, tree = bucket_name, data / "tree"
    local = sorted(cd.tree_digest(tree))

    aws("mb", "s3", "mb", f"s3://{b}")
    aws("sync tree up", "s3", "sync", str(tree), f"s3://{b}/tree")

    listed = objects(aws("ls --recursive", "s3", "ls", "--recursive", f"s3://{b}/tree/").stdout)
    assert len(listed) == len(local)
    assert sorted(k[len("tree/"):] for k in listed) == local
    assert listed["tree/empty-ish/zero-bytes"] == 0
    assert listed["tree/a/b/300k.bin"] == 300_000

    prefixes = aws("list-objects-v2 with delimiter", "s3api", "list-objects-v2", "--bucket", b,
                   "--prefix", "tree/", "--delimiter", "/", "--output", "json").stdout
    page = json.loads(prefixes)
    assert sorted(p["Prefix"] for p in page.get("CommonPrefixes", [])) == \
        ["tree/a/", "tree/dir with space/", "tree/empty-ish/"]
    assert [o["Key"] for o in page.get("Contents", [])] == ["tree/top.txt"]

    again = aws("re-sync (nothing changed)", "s3", "sync", str(tree), f"s3://{b}/tree")
    assert again.stdout.strip() == "", f"a second sync uploaded again:\n{again.stdout}"

    down = tmp_path / "down"
    aws("sync tree down", "s3", "sync", f"s3://{b}/tree", str(down))
    cd.assert_same_tree(tree, down)

    aws("rm --recursive", "s3", "rm", "--recursive", f"s3://{b}/")
    assert objects(aws("ls after rm", "s3", "ls", "--recursive", f"s3://{b}/",
                       check=False).stdout) == {}
    aws("rb", "s3", "rb", f"s3://{b}")
    assert b not in bucket_names(aws("ls buckets after rb", "s3", "ls").stdout)
