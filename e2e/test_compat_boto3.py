"""Compatibility: boto3 programs that use the less everyday parts of S3 work against Hamster.

Proves, through boto3's own request building and response parsing (path style, SigV4), that:
- boto3's transfer manager uploads a 50 MiB file in concurrent 8 MiB parts (S3 multipart ETag)
  and downloads with concurrent ranged GETs; a multipart upload can mix an uploaded part with
  UploadPartCopy parts (a byte range crossing the source's part boundary, and the whole 50 MiB
  multipart source), lists its parts, and completes into exactly the concatenated bytes with the
  S3 multipart ETag; an aborted upload leaves no object and no listed upload;
- DeleteObjects removes a batch of keys with awkward names, reports every requested key
  (including one that never existed) as deleted, says nothing in Quiet mode, and the listing
  shows only what was kept;
- conditional reads (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since) answer
  200, 304 or 412 exactly as S3 does, including S3's precedence rules when two are combined;
  a PUT with If-None-Match: * or a stale If-Match is refused (412) and the object is unchanged;
- flexible checksums: objects put with ChecksumAlgorithm CRC32 or SHA256 give the same checksum
  back with ChecksumMode ENABLED (and boto3 validates the body against it), and a PUT whose
  checksum does not match its body is refused and stores nothing;
- ListObjectsV2 with EncodingType=url carries keys with spaces, `+`, `=`, `%`, `&`, `?`, `#`,
  quotes and UTF-8 intact, through prefixes, StartAfter and continuation tokens;
- ListObjects (v1) pages with Marker and Delimiter: NextMarker continues after a common prefix
  without repeating it.

How: one `hamster serve` on loopback per module (`shared_node`), boto3 client `s3`, a fresh
bucket per test (`bucket`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import zlib
from urllib.parse import unquote_plus

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

import compat_data as cd
import harness

MIB = 1024 * 1024
TRANSFER = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB,
                          max_concurrency=4)


def etag_of_parts(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def get_bytes(s3, bucket: str, key: str, **kw) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def status_of(call) -> int:
    """The HTTP status of a boto3 call: 200 when it returns, the error's status when it raises."""
    try:
        resp = call()
    except ClientError as e:
        return harness.http_status(e)
    if "Body" in resp:
        resp["Body"].read()
    return resp["ResponseMetadata"]["HTTPStatusCode"]


# -- multipart ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_multipart_mixes_uploaded_and_copied_parts(s3, bucket, tmp_path):
    # The source: 50 MiB through boto3's transfer manager (8 MiB parts, uploaded concurrently).
    big = cd.make_big(tmp_path / "big.bin")
    s3.upload_file(str(big), bucket, "source object.bin", Config=TRANSFER)
    head = s3.head_object(Bucket=bucket, Key="source object.bin")
    assert head["ContentLength"] == cd.BIG_BYTES
    assert head["ETag"] == cd.multipart_etag(big, 8 * MIB)
    src = big.read_bytes()

    part1 = os.urandom(5 * MIB)
    # A range of the source that crosses the boundary between its first and second part.
    first, last = 6 * MIB, 11 * MIB - 1
    copied_range = src[first: last + 1]

    key = "assembled.bin"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        p1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                            Body=part1)
        assert p1["ETag"] == f'"{harness.md5(part1)}"'
        p2 = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2,
                                 CopySource={"Bucket": bucket, "Key": "source object.bin"},
                                 CopySourceRange=f"bytes={first}-{last}")
        assert p2["CopyPartResult"]["ETag"] == f'"{harness.md5(copied_range)}"'
        p3 = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=3,
                                 CopySource={"Bucket": bucket, "Key": "source object.bin"})
        assert p3["CopyPartResult"]["ETag"] == f'"{harness.md5(src)}"'

        listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
        assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == \
            [(1, len(part1)), (2, len(copied_range)), (3, len(src))]

        done = s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [
                {"PartNumber": 1, "ETag": p1["ETag"]},
                {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
                {"PartNumber": 3, "ETag": p3["CopyPartResult"]["ETag"]},
            ]})
    except Exception:
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError:
            pass
        raise

    expected = part1 + copied_range + src
    want_etag = etag_of_parts([part1, copied_range, src])
    assert done["ETag"] == want_etag
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(expected)
    assert head["ETag"] == want_etag

    # Downloaded the way boto3 users do: concurrent ranged GETs by the transfer manager.
    down = tmp_path / "assembled.down"
    s3.download_file(bucket, key, str(down), Config=TRANSFER)
    assert cd.sha256_file(down) == harness.sha256(expected)

    # Ranges across the seams between the uploaded part and the copied ones.
    for edge in (len(part1), len(part1) + len(copied_range)):
        assert get_bytes(s3, bucket, key, Range=f"bytes={edge - 10}-{edge + 9}") == \
            expected[edge - 10: edge + 10]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_aborted_multipart_leaves_nothing(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="dir/abandoned key")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="dir/abandoned key", UploadId=upload_id, PartNumber=1,
                   Body=os.urandom(1024))
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("dir/abandoned key", upload_id)]

    s3.abort_multipart_upload(Bucket=bucket, Key="dir/abandoned key", UploadId=upload_id)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="dir/abandoned key", UploadId=upload_id)
    assert harness.error_code(e.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="dir/abandoned key")
    assert harness.http_status(e.value) == 404
    assert harness.list_all_keys(s3, bucket) == []


# -- DeleteObjects --------------------------------------------------------------------------------

def test_delete_objects_batch_and_quiet(s3, bucket):
    doomed = ["a.txt", "dir/b c.txt", "plus+eq=.txt", "ünïcødé/файл.txt", "amp&lt<gt>.txt"]
    kept = ["keep-1", "keep-2"]
    for key in doomed + kept:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    asked = doomed + ["never-existed"]
    resp = s3.delete_objects(Bucket=bucket,
                             Delete={"Objects": [{"Key": k} for k in asked]})
    assert not resp.get("Errors"), resp.get("Errors")
    assert sorted(d["Key"] for d in resp.get("Deleted", [])) == sorted(asked)
    assert [o["Key"] for o in harness.list_all_keys(s3, bucket)] == kept
    for key in doomed:
        with pytest.raises(ClientError) as e:
            s3.head_object(Bucket=bucket, Key=key)
        assert harness.http_status(e.value) == 404, key

    quiet = s3.delete_objects(Bucket=bucket,
                              Delete={"Objects": [{"Key": "keep-1"}], "Quiet": True})
    assert not quiet.get("Errors") and not quiet.get("Deleted"), quiet
    assert [o["Key"] for o in harness.list_all_keys(s3, bucket)] == ["keep-2"]
    assert get_bytes(s3, bucket, "keep-2") == b"keep-2"


# -- conditional requests -------------------------------------------------------------------------

def test_conditional_get_and_head(s3, bucket):
    data = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key="cond", Body=data)
    head = s3.head_object(Bucket=bucket, Key="cond")
    etag, modified = head["ETag"], head["LastModified"]
    other = '"00000000000000000000000000000000"'
    before, after = modified - dt.timedelta(hours=1), modified + dt.timedelta(hours=1)

    def get(**kw):
        return status_of(lambda: s3.get_object(Bucket=bucket, Key="cond", **kw))

    def hd(**kw):
        return status_of(lambda: s3.head_object(Bucket=bucket, Key="cond", **kw))

    assert get_bytes(s3, bucket, "cond", IfMatch=etag) == data
    assert get(IfMatch=other) == 412
    assert get(IfNoneMatch=etag) == 304
    assert get(IfNoneMatch=other) == 200
    assert get(IfModifiedSince=after) == 304
    assert get(IfModifiedSince=before) == 200
    assert get(IfUnmodifiedSince=before) == 412
    assert get(IfUnmodifiedSince=after) == 200
    # S3's precedence: a true If-Match wins over a false If-Unmodified-Since; a false
    # If-None-Match (the ETag matches) wins over a true If-Modified-Since.
    assert get(IfMatch=etag, IfUnmodifiedSince=before) == 200
    assert get(IfNoneMatch=etag, IfModifiedSince=before) == 304

    assert hd(IfMatch=etag) == 200
    assert hd(IfMatch=other) == 412
    assert hd(IfNoneMatch=etag) == 304
    assert hd(IfModifiedSince=after) == 304

    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="cond", IfMatch=other)
    assert harness.error_code(e.value) == "PreconditionFailed"


def test_conditional_put_does_not_overwrite(s3, bucket):
    first, second = os.urandom(1000), os.urandom(1000)
    put = s3.put_object(Bucket=bucket, Key="once", Body=first, IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="once", Body=second, IfNoneMatch="*")
    assert harness.http_status(e.value) == 412
    assert get_bytes(s3, bucket, "once") == first

    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="once", Body=second,
                      IfMatch='"00000000000000000000000000000000"')
    assert harness.http_status(e.value) == 412
    assert get_bytes(s3, bucket, "once") == first
    s3.put_object(Bucket=bucket, Key="once", Body=second, IfMatch=put["ETag"])
    assert get_bytes(s3, bucket, "once") == second


# -- checksums ------------------------------------------------------------------------------------

def checksum_b64(algorithm: str, data: bytes) -> str:
    if algorithm == "CRC32":
        raw = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "big")
    elif algorithm == "SHA256":
        raw = hashlib.sha256(data).digest()
    else:
        raise ValueError(algorithm)
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_checksum_algorithm_round_trip(s3, bucket, algorithm):
    data = os.urandom(256 * 1024 + 7)
    want = checksum_b64(algorithm, data)
    put = s3.put_object(Bucket=bucket, Key="summed", Body=data, ChecksumAlgorithm=algorithm)
    assert put.get(f"Checksum{algorithm}") == want, put

    got = s3.get_object(Bucket=bucket, Key="summed", ChecksumMode="ENABLED")
    # boto3 itself checks the body against the returned checksum while reading it.
    assert got["Body"].read() == data
    assert got.get(f"Checksum{algorithm}") == want
    head = s3.head_object(Bucket=bucket, Key="summed", ChecksumMode="ENABLED")
    assert head.get(f"Checksum{algorithm}") == want


@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_wrong_checksum_is_refused_and_stores_nothing(s3, bucket, algorithm):
    data = os.urandom(10_000)
    wrong = checksum_b64(algorithm, data + b"x")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad-sum", Body=data, **{f"Checksum{algorithm}": wrong})
    assert harness.http_status(e.value) == 400, e.value.response
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="bad-sum")
    assert harness.http_status(e.value) == 404


# -- listings -------------------------------------------------------------------------------------

SPECIAL_KEYS = [
    "plain.txt",
    "space key.txt",
    "two  spaces .txt",
    "plus+key.txt",
    "eq=key.txt",
    "pct%41.txt",
    "pct%.txt",
    "amp&lt;.txt",
    "angle<b>.txt",
    "question?mark.txt",
    "hash#key.txt",
    "semi;colon,comma.txt",
    "quote'dq\".txt",
    "tilde~star*.txt",
    "ünïcødé/файл.txt",
    "emoji-😀.txt",
    "dir/sub dir/x+y=z%.txt",
    "dir/sub dir/plain",
]


def utf8_sorted(keys):
    return sorted(keys, key=lambda k: k.encode("utf-8"))


@pytest.fixture
def special_bucket(s3, bucket):
    for key in SPECIAL_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode("utf-8"))
    return bucket


def capture_raw_listing(s3):
    seen: list[bytes] = []

    def grab(response_dict=None, **_):
        if response_dict is not None:
            seen.append(response_dict.get("body", b""))

    s3.meta.events.register("before-parse.s3.ListObjectsV2", grab)
    return seen, lambda: s3.meta.events.unregister("before-parse.s3.ListObjectsV2", grab)


def test_list_v2_url_encoding_special_keys(s3, special_bucket):
    b = special_bucket
    # Asked for explicitly, the keys come back url-encoded and the program decodes them
    # (as boto3 does itself when it sets EncodingType on its own): a key the server left raw
    # ("%41", '+') would come back altered.
    raw, stop = capture_raw_listing(s3)
    try:
        page = s3.list_objects_v2(Bucket=b, EncodingType="url")
    finally:
        stop()
    assert page.get("EncodingType") == "url"
    assert [unquote_plus(o["Key"]) for o in page["Contents"]] == utf8_sorted(SPECIAL_KEYS), \
        [o["Key"] for o in page["Contents"]]
    assert {unquote_plus(o["Key"]): o["Size"] for o in page["Contents"]} == \
        {k: len(k.encode("utf-8")) for k in SPECIAL_KEYS}
    assert raw and b"pct%2541.txt" in raw[0], raw[0][:2000]

    # boto3's default: it asks for url encoding and decodes the answer transparently.
    page = s3.list_objects_v2(Bucket=b)
    assert [o["Key"] for o in page["Contents"]] == utf8_sorted(SPECIAL_KEYS)

    # Each key reads back by its own name (SigV4 canonical path with these characters).
    for key in SPECIAL_KEYS:
        assert get_bytes(s3, b, key) == key.encode("utf-8"), key

    # Delimiter, prefixes with a space, StartAfter with special characters.
    top = s3.list_objects_v2(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in top.get("CommonPrefixes", [])] == \
        utf8_sorted(["dir/", "ünïcødé/"])
    sub = s3.list_objects_v2(Bucket=b, Prefix="dir/sub dir/", Delimiter="/")
    assert [o["Key"] for o in sub["Contents"]] == utf8_sorted(
        ["dir/sub dir/x+y=z%.txt", "dir/sub dir/plain"])
    assert sub["Prefix"] == "dir/sub dir/"
    after = s3.list_objects_v2(Bucket=b, StartAfter="plus+key.txt")
    assert [o["Key"] for o in after["Contents"]] == \
        [k for k in utf8_sorted(SPECIAL_KEYS) if k.encode() > b"plus+key.txt"]

    # Continuation tokens across all of them, three at a time.
    keys, kw = [], {"Bucket": b, "MaxKeys": 3}
    for _ in range(len(SPECIAL_KEYS) + 2):
        page = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        kw["ContinuationToken"] = page["NextContinuationToken"]
    assert keys == utf8_sorted(SPECIAL_KEYS)


def test_list_v1_marker_delimiter_next_marker(s3, bucket):
    for key in ["a/1", "a/2", "b/1", "c", "d/x", "e"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    p1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2)
    assert [c["Prefix"] for c in p1.get("CommonPrefixes", [])] == ["a/", "b/"]
    assert not p1.get("Contents")
    assert p1["IsTruncated"] is True
    assert p1["NextMarker"] == "b/"

    # Continuing after the prefix "b/" must not hand "b/" back (b/1 sorts after "b/").
    p2 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2, Marker=p1["NextMarker"])
    assert [o["Key"] for o in p2.get("Contents", [])] == ["c"]
    assert [c["Prefix"] for c in p2.get("CommonPrefixes", [])] == ["d/"]
    assert p2["IsTruncated"] is True
    assert p2["NextMarker"] == "d/"

    p3 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=2, Marker=p2["NextMarker"])
    assert [o["Key"] for o in p3.get("Contents", [])] == ["e"]
    assert not p3.get("CommonPrefixes")
    assert p3["IsTruncated"] is False

    # Without a delimiter the marker is simply "start after this key".
    plain = s3.list_objects(Bucket=bucket, Marker="b/1")
    assert [o["Key"] for o in plain["Contents"]] == ["c", "d/x", "e"]
    assert plain["IsTruncated"] is False
    first = s3.list_objects(Bucket=bucket, MaxKeys=4)
    assert [o["Key"] for o in first["Contents"]] == ["a/1", "a/2", "b/1", "c"]
    assert first["IsTruncated"] is True
    rest = s3.list_objects(Bucket=bucket, Marker=first.get("NextMarker") or "c")
    assert [o["Key"] for o in rest["Contents"]] == ["d/x", "e"]

    # The paginator boto3 users reach for walks the same pages.
    seen_keys, seen_prefixes = [], []
    for page in s3.get_paginator("list_objects").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}):
        seen_keys += [o["Key"] for o in page.get("Contents", [])]
        seen_prefixes += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
    assert seen_keys == ["c", "e"]
    assert seen_prefixes == ["a/", "b/", "d/"]

    sub = s3.list_objects(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in sub["Contents"]] == ["a/1", "a/2"]
