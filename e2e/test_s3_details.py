"""S3 details clients and caches depend on: 304 answers, listing pagination, stored headers.

Proves that a conditional GET or HEAD answered 304 Not Modified still carries the object's
ETag, Last-Modified and caching headers; that ListBuckets pages by max-buckets and
continuation-token, filters by prefix and refuses a max-buckets outside 1..10000; that
ListObjectsV2 takes an empty continuation-token as no token; that a ListObjects (v1) answer
keeps its own Prefix unencoded even when boto3 asks for url encoding; and that Content-Encoding
comes back exactly as the client sent it, less only the aws-chunked framing token; that
CompleteMultipartUpload honours If-None-Match and If-Match (a refused one keeps the upload), and
that a retried completion of an upload that went through answers as the first attempt did.
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


def _one_part_upload(s3, bucket: str, key: str, body: bytes) -> tuple[str, list[dict]]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)
    return upload, [{"PartNumber": 1, "ETag": part["ETag"]}]


def test_complete_multipart_honours_if_none_match_and_if_match(s3, bucket):
    existing = s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    upload, parts = _one_part_upload(s3, bucket, "k", b"second")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                     MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert harness.http_status(e.value) == 412
    assert e.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                     MultipartUpload={"Parts": parts},
                                     IfMatch='"0123456789abcdef0123456789abcdef"')
    assert harness.http_status(e.value) == 412
    # Nothing was overwritten, and the upload is still there to complete.
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"
    listed = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload,
                                        MultipartUpload={"Parts": parts},
                                        IfMatch=existing["ETag"])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert s3.head_object(Bucket=bucket, Key="k")["ETag"] == done["ETag"]
    # If-None-Match: * on a key that does not exist creates it; If-Match on one does not.
    upload, parts = _one_part_upload(s3, bucket, "fresh", b"new")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload,
                                     MultipartUpload={"Parts": parts}, IfMatch="*")
    assert harness.http_status(e.value) == 404
    s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload,
                                 MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"new"


def test_a_retried_completion_answers_as_the_first(s3, bucket):
    upload, parts = _one_part_upload(s3, bucket, "r", b"retried body")
    first = s3.complete_multipart_upload(Bucket=bucket, Key="r", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=bucket, Key="r", UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    assert again["ETag"] == first["ETag"]
    assert again["Key"] == "r"
    # A completion naming other parts than what the key holds is still NoSuchUpload, and so
    # is one after the key was overwritten.
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="r", UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1,
                                        "ETag": '"0123456789abcdef0123456789abcdef"'}]})
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    s3.put_object(Bucket=bucket, Key="r", Body=b"other")
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="r", UploadId=upload,
                                     MultipartUpload={"Parts": parts})
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
