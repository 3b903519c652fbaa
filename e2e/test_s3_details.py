"""S3 details clients and caches depend on: 304 answers, listing pagination, stored headers.

Proves that a conditional GET or HEAD answered 304 Not Modified still carries the object's
ETag, Last-Modified and caching headers; that ListBuckets pages by max-buckets and
continuation-token, filters by prefix and refuses a max-buckets outside 1..10000; that
ListObjectsV2 takes an empty continuation-token as no token; that a ListObjects (v1) answer
keeps its own Prefix unencoded even when boto3 asks for url encoding; and that Content-Encoding
comes back exactly as the client sent it, less only the aws-chunked framing token.
"""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import ClientError

import harness
import sigv4
from conftest import unique_bucket


def _headers_of(exc: ClientError) -> dict[str, str]:
    return exc.response["ResponseMetadata"]["HTTPHeaders"]


@pytest.mark.parametrize("head", [False, True])
def test_not_modified_carries_validators_and_caching_headers(s3, bucket, head):
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"cached body",
                        CacheControl="max-age=60", Expires="Wed, 01 Dec 2094 16:00:00 GMT")
    first = s3.head_object(Bucket=bucket, Key="k")
    call = s3.head_object if head else s3.get_object
    for condition in ({"IfNoneMatch": put["ETag"]},
                      {"IfModifiedSince": first["LastModified"]}):
        with pytest.raises(ClientError) as e:
            call(Bucket=bucket, Key="k", **condition)
        assert harness.http_status(e.value) == 304
        h = _headers_of(e.value)
        assert h.get("etag") == put["ETag"]
        assert h.get("last-modified") == first["ResponseMetadata"]["HTTPHeaders"]["last-modified"]
        assert h.get("cache-control") == "max-age=60"
        assert h.get("expires") == "Wed, 01 Dec 2094 16:00:00 GMT"


def test_list_buckets_pages_by_max_buckets_and_filters_by_prefix(s3):
    stem = unique_bucket("lb")
    names = [f"{stem}-{i}" for i in range(3)]
    for n in names:
        s3.create_bucket(Bucket=n)
    try:
        seen: list[str] = []
        kwargs: dict = {"Prefix": stem, "MaxBuckets": 2}
        pages = 0
        while True:
            page = s3.list_buckets(**kwargs)
            pages += 1
            assert page["Prefix"] == stem
            assert len(page["Buckets"]) <= 2
            seen += [b["Name"] for b in page["Buckets"]]
            if "ContinuationToken" not in page:
                break
            kwargs["ContinuationToken"] = page["ContinuationToken"]
        assert pages == 2
        assert seen == names
        # Without a prefix the answer has no Prefix element and lists every bucket.
        everything = s3.list_buckets()
        assert "Prefix" not in everything and "ContinuationToken" not in everything
        assert set(names) <= {b["Name"] for b in everything["Buckets"]}
        assert s3.list_buckets(Prefix=stem + "-2")["Buckets"][0]["Name"] == names[2]
    finally:
        for n in names:
            s3.delete_bucket(Bucket=n)


@pytest.mark.parametrize("value", ["0", "10001", "-1", "ten"])
def test_list_buckets_refuses_bad_max_buckets(shared_node, value):
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    query = {"max-buckets": value}
    headers = signer.sign_headers("GET", shared_node.s3_addr, "/", {}, sigv4.EMPTY_SHA256,
                                  query=query)
    r = requests.get(f"http://{shared_node.s3_addr}/", params=query, headers=headers, timeout=30)
    assert r.status_code == 400, r.text
    assert "<Code>InvalidArgument</Code>" in r.text


def test_list_v2_takes_an_empty_continuation_token_as_none(s3, bucket):
    for k in ["a", "b"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    page = s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert [o["Key"] for o in page["Contents"]] == ["a", "b"]
    assert page["ContinuationToken"] == ""


def test_list_v1_prefix_is_returned_as_sent(s3, bucket):
    # boto3 asks for encoding-type=url on every ListObjects and decodes keys, markers and
    # common prefixes, but not the top-level Prefix: S3 leaves that one as sent.
    s3.put_object(Bucket=bucket, Key="dir one/é+x", Body=b"x")
    page = s3.list_objects(Bucket=bucket, Prefix="dir one/é")
    assert page["Prefix"] == "dir one/é"
    assert [o["Key"] for o in page["Contents"]] == ["dir one/é+x"]


@pytest.mark.parametrize("sent,stored", [
    ("deflate, gzip", "deflate, gzip"),
    ("gzip,deflate", "gzip,deflate"),
])
def test_content_encoding_is_kept_as_sent(s3, bucket, sent, stored):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x", ContentEncoding=sent)
    assert s3.head_object(Bucket=bucket, Key="k")["ContentEncoding"] == stored
    assert s3.get_object(Bucket=bucket, Key="k")["ContentEncoding"] == stored


def test_content_encoding_loses_only_the_aws_chunked_token(shared_node, s3, bucket):
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{bucket}/chunked"
    headers, body = sigv4.signed_chunked_put(
        signer, shared_node.s3_addr, path, b"framed body",
        extra_headers={"content-encoding": "aws-chunked, deflate, gzip"})
    r = requests.put(f"http://{shared_node.s3_addr}{path}", data=body, headers=headers,
                     timeout=30)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == b"framed body"
    assert got["ContentEncoding"] == "deflate, gzip"
