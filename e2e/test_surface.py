"""The wider S3 surface through boto3: additional checksums, conditional PUT, DeleteObjects,
ACLs, ListObjectVersions and stored Content-Encoding.

Proves that an object uploaded with each checksum algorithm S3 offers (CRC32, CRC32C, CRC64NVME,
SHA1, SHA256) keeps its checksum and returns it with ChecksumMode=ENABLED; that a wrong checksum
is BadDigest and stores nothing, and a malformed one is InvalidRequest; that If-None-Match: *
and If-Match make a PUT conditional (412 PreconditionFailed); that DeleteObjects reports every
key, in quiet mode only errors, and refuses more than 1000 keys as MalformedXML; that ACLs read
as private and only private can be set (public-read is NotImplemented); that
ListObjectVersions lists every object as its "null" version and pages by key marker; and that
Content-Encoding is stored and returned. CRC32C and CRC64NVME values are computed here, so the
test does not depend on botocore's optional CRT extension.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib

import pytest
import requests
from botocore.exceptions import ClientError

import harness
import sigv4


def _crc_reflected(data: bytes, poly: int, width: int) -> int:
    """A reflected CRC with initial value and final XOR all ones, bit by bit."""
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ mask


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checksum(algo: str, data: bytes) -> str:
    """The base64 checksum S3 shows for `data`."""
    if algo == "CRC32":
        return _b64(zlib.crc32(data).to_bytes(4, "big"))
    if algo == "CRC32C":
        return _b64(_crc_reflected(data, 0x82F63B78, 32).to_bytes(4, "big"))
    if algo == "CRC64NVME":
        return _b64(_crc_reflected(data, 0x9A6C9329AC4BC9B5, 64).to_bytes(8, "big"))
    if algo == "SHA1":
        return _b64(hashlib.sha1(data).digest())
    return _b64(hashlib.sha256(data).digest())


def test_python_crcs_match_published_check_values():
    # The CRC catalogue's check values for "123456789".
    assert _crc_reflected(b"123456789", 0x82F63B78, 32) == 0xE3069283
    assert _crc_reflected(b"123456789", 0x9A6C9329AC4BC9B5, 64) == 0xAE8B14860A799888


ALGOS = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]
# What botocore can compute itself without the optional CRT extension.
BOTOCORE_ALGOS = {"CRC32", "SHA1", "SHA256"}


@pytest.mark.parametrize("algo", ALGOS)
def test_checksum_round_trip(s3, bucket, algo):
    data = b"checksummed body " * 1000
    expected = checksum(algo, data)
    if algo in BOTOCORE_ALGOS:
        put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm=algo)
    else:
        put = s3.put_object(Bucket=bucket, Key="k", Body=data, **{f"Checksum{algo}": expected})
    assert put[f"Checksum{algo}"] == expected
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == data
    assert got[f"Checksum{algo}"] == expected
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head[f"Checksum{algo}"] == expected
    # Without the mode, and on ranged reads, no checksum is returned.
    plain = s3.head_object(Bucket=bucket, Key="k")
    assert f"Checksum{algo}" not in plain
    ranged = s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert ranged["Body"].read() == data[:10]
    assert f"Checksum{algo}" not in ranged


def test_wrong_checksum_is_bad_digest_and_nothing_is_stored(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"hello", ChecksumCRC32=checksum("CRC32", b"other"))
    assert harness.error_code(e.value) == "BadDigest"
    assert harness.http_status(e.value) == 400
    assert "CRC32" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="bad")
    assert harness.http_status(e.value) == 404


def test_malformed_checksum_is_invalid_request(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"hello", ChecksumCRC32="not-base64!")
    assert harness.error_code(e.value) == "InvalidRequest"
    assert e.value.response["Error"]["Message"] == "Value for x-amz-checksum-crc32 header is invalid."
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"hello", ChecksumSHA256=checksum("CRC32", b"hello"))
    assert harness.error_code(e.value) == "InvalidRequest"


def _hand_put(node, bucket, key, body, headers):
    signer = sigv4.Signer(node.access_key, node.secret_key)
    path = f"/{bucket}/{key}"
    h = signer.sign_headers("PUT", node.s3_addr, path,
                            {"content-length": str(len(body)), **headers}, harness.sha256(body))
    return requests.put(node.endpoint + path, data=body, headers=h, timeout=30)


def test_algorithm_alone_is_computed_and_stored(shared_node, s3, bucket):
    body = b"compute this for me"
    r = _hand_put(shared_node, bucket, "computed", body, {"x-amz-sdk-checksum-algorithm": "SHA1"})
    assert r.status_code == 200, r.text
    assert r.headers["x-amz-checksum-sha1"] == checksum("SHA1", body)
    got = s3.head_object(Bucket=bucket, Key="computed", ChecksumMode="ENABLED")
    assert got["ChecksumSHA1"] == checksum("SHA1", body)


def test_two_checksum_algorithms_are_refused(shared_node, s3, bucket):
    body = b"two sums"
    r = _hand_put(shared_node, bucket, "two", body, {
        "x-amz-checksum-crc32": checksum("CRC32", body),
        "x-amz-checksum-sha256": checksum("SHA256", body),
    })
    assert r.status_code == 400, r.text
    assert "<Code>InvalidRequest</Code>" in r.text
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="two")


def test_if_none_match_star_refuses_the_second_put(s3, bucket):
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert harness.error_code(e.value) == "PreconditionFailed"
    assert harness.http_status(e.value) == 412
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def test_if_match_needs_the_current_etag(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert harness.http_status(e.value) == 412
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v1"
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch=etag)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="missing", Body=b"x", IfMatch=etag)
    assert harness.http_status(e.value) == 404
    assert harness.error_code(e.value) == "NoSuchKey"


@pytest.mark.parametrize("quiet", [False, True])
def test_delete_objects(s3, bucket, quiet):
    keys = ["a", "b/c", "d e"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    objects = [{"Key": k} for k in keys + ["never-existed"]]
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": quiet})
    assert out.get("Errors", []) == []
    deleted = sorted(d["Key"] for d in out.get("Deleted", []))
    assert deleted == ([] if quiet else sorted(keys + ["never-existed"]))
    assert harness.list_all_keys(s3, bucket) == []


def test_delete_objects_reports_per_key_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    out = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "a", "VersionId": "null"}, {"Key": "b", "VersionId": "v123"}]},
    )
    assert [(d["Key"], d.get("VersionId")) for d in out["Deleted"]] == [("a", "null")]
    assert [(e["Key"], e["Code"]) for e in out["Errors"]] == [("b", "NoSuchVersion")]


def test_delete_objects_refuses_more_than_1000_keys(s3, bucket):
    objects = [{"Key": f"k{i}"} for i in range(1001)]
    with pytest.raises(ClientError) as e:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert harness.error_code(e.value) == "MalformedXML"
    assert harness.http_status(e.value) == 400


def _assert_private(acl):
    grants = acl["Grants"]
    assert len(grants) == 1
    assert grants[0]["Permission"] == "FULL_CONTROL"
    assert grants[0]["Grantee"]["ID"] == acl["Owner"]["ID"]


def test_acls_are_private(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    bucket_acl = s3.get_bucket_acl(Bucket=bucket)
    _assert_private(bucket_acl)
    _assert_private(s3.get_object_acl(Bucket=bucket, Key="k"))
    _assert_private(s3.get_object_acl(Bucket=bucket, Key="k", VersionId="null"))
    s3.put_bucket_acl(Bucket=bucket, ACL="private")
    s3.put_object_acl(Bucket=bucket, Key="k", ACL="private")
    policy = {"Owner": bucket_acl["Owner"], "Grants": bucket_acl["Grants"]}
    s3.put_bucket_acl(Bucket=bucket, AccessControlPolicy=policy)
    s3.put_object_acl(Bucket=bucket, Key="k", AccessControlPolicy=policy)


def test_public_acls_are_not_implemented(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert harness.error_code(e.value) == "NotImplemented"
    assert harness.http_status(e.value) == 501
    with pytest.raises(ClientError) as e:
        s3.put_object_acl(Bucket=bucket, Key="k", ACL="public-read")
    assert harness.error_code(e.value) == "NotImplemented"
    with pytest.raises(ClientError) as e:
        s3.get_object_acl(Bucket=bucket, Key="missing")
    assert harness.error_code(e.value) == "NoSuchKey"


def test_list_object_versions(s3, bucket):
    keys = ["a", "b", "dir/x", "dir/y", "z"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    out = s3.list_object_versions(Bucket=bucket)
    versions = out["Versions"]
    assert [v["Key"] for v in versions] == keys
    assert all(v["VersionId"] == "null" and v["IsLatest"] for v in versions)
    assert versions[0]["Size"] == 1
    assert versions[0]["ETag"] == f'"{harness.md5(b"a")}"'

    grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [v["Key"] for v in grouped["Versions"]] == ["a", "b", "z"]
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["dir/"]

    seen = []
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    while True:
        seen += [v["Key"] for v in page.get("Versions", [])]
        if not page["IsTruncated"]:
            break
        assert page["NextVersionIdMarker"] == "null"
        page = s3.list_object_versions(
            Bucket=bucket, MaxKeys=2, KeyMarker=page["NextKeyMarker"],
            VersionIdMarker=page["NextVersionIdMarker"])
    assert seen == keys

    pref = s3.list_object_versions(Bucket=bucket, Prefix="dir/")
    assert [v["Key"] for v in pref["Versions"]] == ["dir/x", "dir/y"]
    paginated = [v["Key"] for p in s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}) for v in p.get("Versions", [])]
    assert paginated == keys


def test_content_encoding_is_stored_and_returned(s3, bucket):
    data = gzip.compress(b"squeezed " * 100)
    s3.put_object(Bucket=bucket, Key="z.gz", Body=data, ContentEncoding="gzip",
                  ContentType="text/plain")
    got = s3.get_object(Bucket=bucket, Key="z.gz")
    assert got["ContentEncoding"] == "gzip"
    assert got["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="z.gz")["ContentEncoding"] == "gzip"


def test_object_tagging_is_not_implemented(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=b")
    assert harness.error_code(e.value) == "NotImplemented"


def test_storage_class_standard_is_accepted_and_others_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="std", Body=b"x", StorageClass="STANDARD")
    assert s3.get_object(Bucket=bucket, Key="std")["Body"].read() == b"x"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="cold", Body=b"x", StorageClass="GLACIER")
    assert e.value.response["Error"]["Code"] == "InvalidStorageClass"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="cold")
    assert e.value.response["Error"]["Code"] == "404"
