"""The AWS SDK for Python (boto3) sees Hamster behave like S3.

Proves, through boto3's default behaviour (path style, SigV4), that buckets and objects round-trip
byte for byte, that ListObjectsV2 answers prefixes, delimiters and MaxKeys pagination exactly as
S3 does (including keys with spaces, '+', '%' and non-ASCII characters), that user metadata and
Content-Type survive, that ranged reads return the right bytes, and that the errors a program
branches on carry S3's codes and statuses: BadDigest (and nothing stored), NoSuchKey,
NoSuchBucket, BucketNotEmpty, InvalidBucketName, InvalidRange. Presigned URLs made by boto3 work
with a plain HTTP client, and a tampered one is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
import requests
from botocore.exceptions import ClientError

import harness
from conftest import unique_bucket


def test_bucket_create_head_list_location_delete(s3):
    name = unique_bucket()
    s3.create_bucket(Bucket=name)
    s3.head_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    loc = s3.get_bucket_location(Bucket=name)
    assert loc.get("LocationConstraint") in (None, "", "us-east-1")
    s3.delete_bucket(Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert harness.http_status(e.value) == 404


def test_create_existing_bucket_is_refused(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=bucket)
    assert harness.error_code(e.value) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
    assert harness.http_status(e.value) == 409


@pytest.mark.parametrize("size", [0, 1, 1024, 5 * 1024 * 1024 + 3])
def test_put_get_head_delete_round_trip(s3, bucket, size):
    data = os.urandom(size)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=data)
    assert put["ETag"] == f'"{harness.md5(data)}"'

    got = s3.get_object(Bucket=bucket, Key="obj")
    body = got["Body"].read()
    assert harness.sha256(body) == harness.sha256(data)
    assert got["ContentLength"] == size
    assert got["ETag"] == f'"{harness.md5(data)}"'

    head = s3.head_object(Bucket=bucket, Key="obj")
    assert head["ContentLength"] == size
    assert head["ETag"] == f'"{harness.md5(data)}"'
    assert head["LastModified"] is not None

    s3.delete_object(Bucket=bucket, Key="obj")
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="obj")
    assert harness.http_status(e.value) == 404


def test_overwrite_replaces_content(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert [o["Key"] for o in harness.list_all_keys(s3, bucket)] == ["k"]


def test_delete_missing_key_succeeds(s3, bucket):
    # S3 answers 204 for a delete of a key that does not exist.
    resp = s3.delete_object(Bucket=bucket, Key="never-written")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 204


LISTING_KEYS = [
    "a/one.txt",
    "a/two words.txt",
    "a/b/deep+plus.txt",
    "a/pct%41.txt",
    "b/ünïcødé-ключ-鍵.txt",
    "c+d.txt",
    "top level.txt",
]


@pytest.fixture
def listing_bucket(s3, bucket):
    for i, key in enumerate(LISTING_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=f"body {i}".encode())
    return bucket


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def test_list_all_sorted_with_sizes(s3, listing_bucket):
    page = s3.list_objects_v2(Bucket=listing_bucket)
    assert page["KeyCount"] == len(LISTING_KEYS)
    assert not page["IsTruncated"]
    assert [o["Key"] for o in page["Contents"]] == utf8_sorted(LISTING_KEYS)
    by_key = {o["Key"]: o for o in page["Contents"]}
    for i, key in enumerate(LISTING_KEYS):
        body = f"body {i}".encode()
        assert by_key[key]["Size"] == len(body)
        assert by_key[key]["ETag"] == f'"{harness.md5(body)}"'


def test_list_pagination_max_keys_two(s3, listing_bucket):
    seen, pages = [], []
    kwargs = {"Bucket": listing_bucket, "MaxKeys": 2}
    for _ in range(10):
        page = s3.list_objects_v2(**kwargs)
        keys = [o["Key"] for o in page.get("Contents", [])]
        pages.append(keys)
        seen.extend(keys)
        assert len(keys) <= 2
        assert page["KeyCount"] == len(keys)
        if not page["IsTruncated"]:
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    assert seen == utf8_sorted(LISTING_KEYS)
    assert [len(p) for p in pages] == [2, 2, 2, 1]


def test_list_prefix_and_delimiter(s3, listing_bucket):
    root = s3.list_objects_v2(Bucket=listing_bucket, Delimiter="/")
    assert [o["Key"] for o in root.get("Contents", [])] == ["c+d.txt", "top level.txt"]
    assert [p["Prefix"] for p in root.get("CommonPrefixes", [])] == ["a/", "b/"]

    under_a = s3.list_objects_v2(Bucket=listing_bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a.get("Contents", [])] == [
        "a/one.txt", "a/pct%41.txt", "a/two words.txt"]
    assert [p["Prefix"] for p in under_a.get("CommonPrefixes", [])] == ["a/b/"]

    only_b = s3.list_objects_v2(Bucket=listing_bucket, Prefix="b/")
    assert [o["Key"] for o in only_b["Contents"]] == ["b/ünïcødé-ключ-鍵.txt"]

    none = s3.list_objects_v2(Bucket=listing_bucket, Prefix="zzz")
    assert none["KeyCount"] == 0
    assert "Contents" not in none


def test_list_delimiter_pagination_counts_prefixes(s3, listing_bucket):
    entries = []
    kwargs = {"Bucket": listing_bucket, "Delimiter": "/", "MaxKeys": 2}
    for _ in range(10):
        page = s3.list_objects_v2(**kwargs)
        got = [o["Key"] for o in page.get("Contents", [])] + \
              [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        assert 1 <= len(got) <= 2
        entries.extend(got)
        if not page["IsTruncated"]:
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    assert utf8_sorted(entries) == ["a/", "b/", "c+d.txt", "top level.txt"]
    assert len(entries) == 4


def test_list_start_after(s3, listing_bucket):
    page = s3.list_objects_v2(Bucket=listing_bucket, StartAfter="a/two words.txt")
    expected = [k for k in utf8_sorted(LISTING_KEYS)
                if k.encode() > "a/two words.txt".encode()]
    assert [o["Key"] for o in page["Contents"]] == expected


def test_special_keys_get_back_by_name(s3, listing_bucket):
    for i, key in enumerate(LISTING_KEYS):
        assert s3.get_object(Bucket=listing_bucket, Key=key)["Body"].read() == \
            f"body {i}".encode()


def test_metadata_and_content_type_round_trip(s3, bucket):
    s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"hello",
                  ContentType="text/plain; charset=utf-8",
                  Metadata={"color": "blue", "owner-name": "Ada Lovelace"})
    head = s3.head_object(Bucket=bucket, Key="doc.txt")
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert head["Metadata"] == {"color": "blue", "owner-name": "Ada Lovelace"}
    got = s3.get_object(Bucket=bucket, Key="doc.txt")
    assert got["ContentType"] == "text/plain; charset=utf-8"
    assert got["Metadata"] == {"color": "blue", "owner-name": "Ada Lovelace"}
    assert got["Body"].read() == b"hello"


def test_correct_content_md5_is_accepted(s3, bucket):
    body = b"checked body"
    md5_b64 = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ContentMD5=md5_b64)
    assert s3.get_object(Bucket=bucket, Key="ok")["Body"].read() == body


def test_wrong_content_md5_is_bad_digest_and_stores_nothing(s3, bucket):
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"actual body", ContentMD5=wrong)
    assert harness.error_code(e.value) == "BadDigest"
    assert harness.http_status(e.value) == 400
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="bad")
    assert harness.http_status(e.value) == 404
    assert harness.list_all_keys(s3, bucket) == []


def test_get_missing_key_is_no_such_key(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="missing/key")
    assert harness.error_code(e.value) == "NoSuchKey"
    assert harness.http_status(e.value) == 404


def test_missing_bucket_is_no_such_bucket(s3):
    name = unique_bucket("absent")
    with pytest.raises(ClientError) as e:
        s3.list_objects_v2(Bucket=name)
    assert harness.error_code(e.value) == "NoSuchBucket"
    assert harness.http_status(e.value) == 404
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert harness.error_code(e.value) == "NoSuchBucket"


def test_delete_non_empty_bucket_is_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="keep", Body=b"data")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert harness.error_code(e.value) == "BucketNotEmpty"
    assert harness.http_status(e.value) == 409
    # The bucket and its object are untouched.
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"data"


@pytest.mark.parametrize("name", ["ab", "Upper_Case_Name", "-leading-dash", "a" * 64,
                                  "192.168.5.4"])
def test_invalid_bucket_name(s3, name):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert harness.error_code(e.value) == "InvalidBucketName"
    assert harness.http_status(e.value) == 400
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_ranged_reads(s3, bucket):
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    cases = {
        "bytes=0-0": (data[0:1], f"bytes 0-0/{len(data)}"),
        "bytes=10-19": (data[10:20], f"bytes 10-19/{len(data)}"),
        "bytes=99990-": (data[99990:], f"bytes 99990-99999/{len(data)}"),
        "bytes=-25": (data[-25:], f"bytes 99975-99999/{len(data)}"),
        # An end past the object is clipped to the last byte.
        "bytes=99999-200000": (data[99999:], f"bytes 99999-99999/{len(data)}"),
    }
    for rng, (want, content_range) in cases.items():
        got = s3.get_object(Bucket=bucket, Key="r", Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206, rng
        assert got["ContentRange"] == content_range, rng
        assert got["ContentLength"] == len(want), rng
        assert got["Body"].read() == want, rng


def test_range_beyond_size_is_invalid_range(s3, bucket):
    s3.put_object(Bucket=bucket, Key="short", Body=b"x" * 100)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="short", Range="bytes=5000-6000")
    assert harness.error_code(e.value) == "InvalidRange"
    assert harness.http_status(e.value) == 416


def test_presigned_get_works_with_plain_http(s3, bucket):
    data = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key="shared file.bin", Body=data)
    url = s3.generate_presigned_url("get_object",
                                    Params={"Bucket": bucket, "Key": "shared file.bin"},
                                    ExpiresIn=300)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == data


def test_presigned_url_with_tampered_signature_is_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"top secret bytes")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "secret"},
                                    ExpiresIn=300)
    marker = "X-Amz-Signature="
    start = url.index(marker) + len(marker)
    sig = url[start:start + 64]
    flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
    tampered = url[:start] + flipped + url[start + 64:]
    r = requests.get(tampered, timeout=30)
    assert r.status_code == 403
    assert b"top secret bytes" not in r.content
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_presigned_url_for_other_key_is_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="public", Body=b"ok")
    s3.put_object(Bucket=bucket, Key="private", Body=b"not for you")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "public"},
                                    ExpiresIn=300)
    r = requests.get(url.replace("/public?", "/private?"), timeout=30)
    assert r.status_code == 403
    assert b"not for you" not in r.content


def test_presigned_put_stores_object(s3, bucket):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "up"},
                                    ExpiresIn=300)
    r = requests.put(url, data=b"uploaded via presigned url", timeout=30)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="up")["Body"].read() == \
        b"uploaded via presigned url"


def test_unsupported_operation_is_not_implemented(s3, bucket):
    # Static website hosting is not part of Hamster's S3 surface.
    with pytest.raises(ClientError) as e:
        s3.get_bucket_website(Bucket=bucket)
    assert harness.error_code(e.value) == "NotImplemented"
    assert harness.http_status(e.value) == 501


def test_unique_bucket_names_are_isolated(s3):
    a, b = unique_bucket(), unique_bucket()
    s3.create_bucket(Bucket=a)
    s3.create_bucket(Bucket=b)
    try:
        s3.put_object(Bucket=a, Key="same", Body=b"in a")
        s3.put_object(Bucket=b, Key="same", Body=b"in b")
        assert s3.get_object(Bucket=a, Key="same")["Body"].read() == b"in a"
        assert s3.get_object(Bucket=b, Key="same")["Body"].read() == b"in b"
    finally:
        harness.empty_and_delete_bucket(s3, a)
        harness.empty_and_delete_bucket(s3, b)

