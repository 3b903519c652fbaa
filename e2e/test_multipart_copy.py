"""Multipart uploads and server-side copies behave as on S3, and free their space.

Proves through boto3 that a three-part upload completes into the exact bytes with the
`md5-of-md5s-N` ETag; that ranged and `partNumber` reads see the stitched parts; that the
completion errors a client branches on carry S3's codes (InvalidPart, InvalidPartOrder,
EntityTooSmall, NoSuchUpload); that ListParts and ListMultipartUploads paginate; that
UploadPartCopy and CopyObject copy bytes server-side with S3's metadata-directive rules and
copy-source conditions; that an abort and a delete remove the parts' shard files (the bodies are
freed by the commit and reclaimed, INV-1/INV-2 keep bytes out of the log); and that the stock aws
CLI's multipart `s3 cp` round-trips a 20 MiB file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

import harness

MIB = 1024 * 1024


def multipart_etag(parts: list[bytes]) -> str:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def upload(s3, bucket: str, key: str, parts: list[bytes], **create) -> tuple[str, list[dict]]:
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    done = []
    for i, body in enumerate(parts, start=1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i, Body=body)
        done.append({"PartNumber": i, "ETag": r["ETag"]})
    return uid, done


def complete(s3, bucket, key, uid, parts):
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": parts})


def code_of(fn) -> str:
    with pytest.raises(ClientError) as e:
        fn()
    return harness.error_code(e.value)


def three_parts() -> list[bytes]:
    return [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1024)]


def test_three_parts_complete_read_back_and_ranges(s3, bucket):
    parts = three_parts()
    data = b"".join(parts)
    uid, done = upload(s3, bucket, "mp", parts, ContentType="text/x-test",
                       Metadata={"colour": "blue"})
    r = complete(s3, bucket, "mp", uid, done)
    want = multipart_etag(parts)
    assert r["ETag"].strip('"') == want
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == data
    assert got["ETag"].strip('"') == want
    assert got["ContentType"] == "text/x-test"
    assert got["Metadata"] == {"colour": "blue"}
    # A range across the boundary between parts 1 and 2.
    a, b = 5 * MIB - 100, 5 * MIB + 99
    ranged = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={a}-{b}")
    assert ranged["Body"].read() == data[a:b + 1]
    # partNumber reads serve one part and name the part count.
    p2 = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert p2["Body"].read() == parts[1]
    assert p2["PartsCount"] == 3
    h3 = s3.head_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert h3["ContentLength"] == 1024
    assert h3["PartsCount"] == 3
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert harness.http_status(e.value) == 416
    # The upload is gone once complete.
    assert code_of(lambda: s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)) == \
        "NoSuchUpload"


def test_reupload_replaces_a_part(s3, bucket):
    first, second = os.urandom(5 * MIB), os.urandom(5 * MIB)
    tail = b"tail"
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=first)
    e1 = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=second)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=2, Body=tail)["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="k", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == \
        [(1, e1, 5 * MIB), (2, e2, 4)]
    complete(s3, bucket, "k", uid, [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == second + tail


def test_completion_errors(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(10)]
    uid, done = upload(s3, bucket, "k", parts)
    wrong = [done[0], {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}]
    assert code_of(lambda: complete(s3, bucket, "k", uid, wrong)) == "InvalidPart"
    missing = [done[0], {"PartNumber": 3, "ETag": done[1]["ETag"]}]
    assert code_of(lambda: complete(s3, bucket, "k", uid, missing)) == "InvalidPart"
    assert code_of(lambda: complete(s3, bucket, "k", uid, done[::-1])) == "InvalidPartOrder"
    # Part 1 of 10 bytes is not the last part: too small.
    small_uid, small = upload(s3, bucket, "s", [b"x" * 10, b"y" * 10])
    assert code_of(lambda: complete(s3, bucket, "s", small_uid, small)) == "EntityTooSmall"
    # After failed completions the upload still completes correctly.
    complete(s3, bucket, "k", uid, done)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"".join(parts)
    s3.abort_multipart_upload(Bucket=bucket, Key="s", UploadId=small_uid)


def test_unknown_upload(s3, bucket):
    bogus = "0" * 32
    assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId=bogus,
                                          PartNumber=1, Body=b"x")) == "NoSuchUpload"
    assert code_of(lambda: s3.list_parts(Bucket=bucket, Key="k", UploadId=bogus)) == \
        "NoSuchUpload"
    assert code_of(lambda: s3.abort_multipart_upload(Bucket=bucket, Key="k",
                                                     UploadId=bogus)) == "NoSuchUpload"
    assert code_of(lambda: complete(s3, bucket, "k", bogus,
                                    [{"PartNumber": 1, "ETag": '"x"'}])) == "NoSuchUpload"
    uid = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    assert code_of(lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId=uid,
                                          PartNumber=10001, Body=b"x")) == "InvalidArgument"
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=uid)


def test_list_parts_and_uploads_paginate(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    for n in range(1, 6):
        s3.upload_part(Bucket=bucket, Key="parts", UploadId=uid, PartNumber=n, Body=b"p" * n)
    page = s3.list_parts(Bucket=bucket, Key="parts", UploadId=uid, MaxParts=2)
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    assert page["IsTruncated"] is True
    assert page["NextPartNumberMarker"] == 2
    assert page["StorageClass"] == "STANDARD"
    page = s3.list_parts(Bucket=bucket, Key="parts", UploadId=uid, MaxParts=2,
                         PartNumberMarker=4)
    assert [p["PartNumber"] for p in page["Parts"]] == [5]
    assert page["IsTruncated"] is False

    keys = ["a/1", "a/2", "b", "c/x/y", "d"]
    ids = {k: s3.create_multipart_upload(Bucket=bucket, Key=k)["UploadId"] for k in keys}
    ids["parts"] = uid
    seen, kwargs = [], {"Bucket": bucket, "MaxUploads": 2}
    for _ in range(20):
        r = s3.list_multipart_uploads(**kwargs)
        seen.extend((u["Key"], u["UploadId"]) for u in r.get("Uploads", []))
        if not r["IsTruncated"]:
            break
        kwargs["KeyMarker"] = r["NextKeyMarker"]
        kwargs["UploadIdMarker"] = r["NextUploadIdMarker"]
    assert seen == sorted(ids.items())
    r = s3.list_multipart_uploads(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["a/", "c/"]
    assert [u["Key"] for u in r["Uploads"]] == ["b", "d", "parts"]
    r = s3.list_multipart_uploads(Bucket=bucket, Prefix="a/")
    assert [u["Key"] for u in r["Uploads"]] == ["a/1", "a/2"]
    for k, i in ids.items():
        s3.abort_multipart_upload(Bucket=bucket, Key=k, UploadId=i)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_upload_part_copy_ranges(s3, bucket):
    src = os.urandom(6 * MIB + 10)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": bucket, "Key": "src"},
                             CopySourceRange=f"bytes=0-{5 * MIB}")
    r2 = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=uid, PartNumber=2,
                             CopySource=f"{bucket}/src",
                             CopySourceRange=f"bytes={6 * MIB}-{6 * MIB + 9}")
    e1, e2 = r1["CopyPartResult"]["ETag"], r2["CopyPartResult"]["ETag"]
    want = [src[:5 * MIB + 1], src[6 * MIB:]]
    assert e1.strip('"') == hashlib.md5(want[0]).hexdigest()
    complete(s3, bucket, "dst", uid, [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}])
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"".join(want)
    assert got["ETag"].strip('"') == multipart_etag(want)
    uid2 = s3.create_multipart_upload(Bucket=bucket, Key="dst2")["UploadId"]
    assert code_of(lambda: s3.upload_part_copy(
        Bucket=bucket, Key="dst2", UploadId=uid2, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange=f"bytes=0-{len(src)}")) == "InvalidArgument"
    assert code_of(lambda: s3.upload_part_copy(
        Bucket=bucket, Key="dst2", UploadId=uid2, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "nope"})) == "NoSuchKey"
    s3.abort_multipart_upload(Bucket=bucket, Key="dst2", UploadId=uid2)


def test_copy_object_metadata_and_conditions(s3, bucket):
    body = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="dir/src file", Body=body, ContentType="text/a",
                        Metadata={"m": "1"}, CacheControl="max-age=5")
    etag = put["ETag"]
    r = s3.copy_object(Bucket=bucket, Key="copy",
                       CopySource={"Bucket": bucket, "Key": "dir/src file"})
    assert r["CopyObjectResult"]["ETag"] == etag
    got = s3.get_object(Bucket=bucket, Key="copy")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/a"
    assert got["Metadata"] == {"m": "1"}
    assert got["CacheControl"] == "max-age=5"

    s3.copy_object(Bucket=bucket, Key="replaced", MetadataDirective="REPLACE",
                   ContentType="text/b", Metadata={"n": "2"},
                   CopySource={"Bucket": bucket, "Key": "dir/src file"})
    got = s3.head_object(Bucket=bucket, Key="replaced")
    assert got["ContentType"] == "text/b"
    assert got["Metadata"] == {"n": "2"}
    assert got["ETag"] == etag

    # Onto itself: refused without REPLACE, allowed with it.
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "copy"})
    assert harness.error_code(e.value) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "copy"},
                   MetadataDirective="REPLACE", Metadata={"fresh": "yes"})
    got = s3.get_object(Bucket=bucket, Key="copy")
    assert got["Metadata"] == {"fresh": "yes"}
    assert got["Body"].read() == body

    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="c2", CopySourceIfMatch='"' + "0" * 32 + '"',
                       CopySource={"Bucket": bucket, "Key": "copy"})
    assert harness.http_status(e.value) == 412
    assert harness.error_code(e.value) == "PreconditionFailed"
    s3.copy_object(Bucket=bucket, Key="c2", CopySourceIfMatch=etag,
                   CopySource={"Bucket": bucket, "Key": "copy"})
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="c3", CopySourceIfNoneMatch=etag,
                       CopySource={"Bucket": bucket, "Key": "copy"})
    assert harness.http_status(e.value) == 412
    assert code_of(lambda: s3.copy_object(
        Bucket=bucket, Key="c4", CopySource={"Bucket": bucket, "Key": "missing"})) == "NoSuchKey"
    assert code_of(lambda: s3.copy_object(
        Bucket=bucket, Key="c4",
        CopySource={"Bucket": "no-such-bucket-hamster", "Key": "x"})) == "NoSuchBucket"


def test_copy_of_multipart_object(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(100)]
    uid, done = upload(s3, bucket, "mp", parts)
    complete(s3, bucket, "mp", uid, done)
    s3.copy_object(Bucket=bucket, Key="flat", CopySource={"Bucket": bucket, "Key": "mp"})
    assert s3.get_object(Bucket=bucket, Key="flat")["Body"].read() == b"".join(parts)


def wait_for(cond, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_abort_and_delete_reclaim_shard_files(node_factory):
    node = node_factory("reclaim")
    s3 = node.client()
    s3.create_bucket(Bucket="space")

    def count() -> int:
        return len(harness.shard_files(node.data_dir))

    base = count()
    uid, _ = upload(s3, "space", "aborted", [os.urandom(1024), os.urandom(2048)])
    assert count() == base + 2
    s3.abort_multipart_upload(Bucket="space", Key="aborted", UploadId=uid)
    assert wait_for(lambda: count() == base), harness.shard_files(node.data_dir)

    parts = three_parts()
    uid, done = upload(s3, "space", "kept", parts)
    # A replaced part's old body is freed too.
    done[2]["ETag"] = s3.upload_part(Bucket="space", Key="kept", UploadId=uid, PartNumber=3,
                                     Body=parts[2])["ETag"]
    assert wait_for(lambda: count() == base + 3)
    complete(s3, "space", "kept", uid, done)
    assert count() == base + 3
    s3.delete_object(Bucket="space", Key="kept")
    assert wait_for(lambda: count() == base), harness.shard_files(node.data_dir)
    assert harness.tmp_shard_files(node.data_dir) == []


def aws_executable() -> str | None:
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    return shutil.which("aws")


def test_aws_cli_multipart_cp_round_trips(shared_node, s3, bucket, tmp_path):
    exe = aws_executable()
    if exe is None:
        pytest.fail("aws CLI not installed (pip install -r e2e/requirements.txt)")
    cfg = tmp_path / "config"
    cfg.write_text("[default]\nregion = us-east-1\ns3 =\n  multipart_threshold = 8MB\n"
                   "  multipart_chunksize = 8MB\n  addressing_style = path\n")
    env = harness.child_env({
        "AWS_ACCESS_KEY_ID": shared_node.access_key,
        "AWS_SECRET_ACCESS_KEY": shared_node.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(cfg),
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_PAGER": "",
    })
    src = tmp_path / "big.bin"
    data = os.urandom(20 * MIB)
    src.write_bytes(data)
    back = tmp_path / "back.bin"

    def aws(*args):
        p = subprocess.run([exe, "--endpoint-url", shared_node.endpoint, *args],
                           capture_output=True, text=True, env=env, timeout=180,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"aws {args}: {p.stdout}\n{p.stderr}"

    aws("s3", "cp", str(src), f"s3://{bucket}/big.bin")
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")
    aws("s3", "cp", f"s3://{bucket}/big.bin", str(back))
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(data).digest()
