"""Browser form uploads (S3 POST Object) signed with a SigV4 POST policy.

Proves, with policies made by boto3's `generate_presigned_post` and forms sent by a plain HTTP
client, that a signed form stores the file byte for byte with its Content-Type and metadata
(answering 204 by default and a PostResponse document for success_action_status 201), that
`${filename}` takes the uploaded file's name, and that the policy is enforced: a file outside
content-length-range is refused with EntityTooLarge and nothing is stored; a tampered, expired
or key-violating policy is refused with 403.
"""

from __future__ import annotations

import base64
import json
import os
import xml.etree.ElementTree as ET

import pytest
import requests
from botocore.exceptions import ClientError

import harness


def presign(s3, bucket, key, conditions=(), fields=None, expires=300):
    return s3.generate_presigned_post(
        Bucket=bucket, Key=key, Fields=dict(fields or {}), Conditions=list(conditions),
        ExpiresIn=expires,
    )


def upload(post, data: bytes, filename: str = "photo.jpg", **overrides):
    fields = dict(post["fields"])
    fields.update(overrides)
    return requests.post(post["url"], data=fields, files={"file": (filename, data)}, timeout=60)


def missing(s3, bucket, key) -> bool:
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key=key)
    return harness.http_status(e.value) == 404


def test_signed_form_stores_file_and_metadata(s3, bucket):
    data = os.urandom(200_000) + b"\r\n--not-a-boundary\r\n"
    fields = {"Content-Type": "image/jpeg", "x-amz-meta-owner": "ann"}
    conditions = [
        {"Content-Type": "image/jpeg"},
        {"x-amz-meta-owner": "ann"},
        ["content-length-range", 1, 1_000_000],
    ]
    post = presign(s3, bucket, "uploads/${filename}", conditions, fields)
    resp = upload(post, data, filename="cat.jpg")
    assert resp.status_code == 204, resp.text
    assert resp.headers["ETag"] == f'"{harness.md5(data)}"'

    got = s3.get_object(Bucket=bucket, Key="uploads/cat.jpg")
    assert got["Body"].read() == data
    assert got["ContentType"] == "image/jpeg"
    assert got["Metadata"] == {"owner": "ann"}
    assert got["ETag"] == f'"{harness.md5(data)}"'


def test_success_action_status_201_returns_post_response(s3, bucket):
    post = presign(s3, bucket, "doc.txt", [{"success_action_status": "201"}],
                   {"success_action_status": "201"})
    resp = upload(post, b"hello form")
    assert resp.status_code == 201, resp.text
    root = ET.fromstring(resp.content)
    assert root.tag.endswith("PostResponse")
    values = {child.tag.split("}")[-1]: child.text for child in root}
    assert values["Bucket"] == bucket
    assert values["Key"] == "doc.txt"
    assert values["ETag"] == f'"{harness.md5(b"hello form")}"'
    assert values["Location"].endswith(f"/{bucket}/doc.txt")
    assert s3.get_object(Bucket=bucket, Key="doc.txt")["Body"].read() == b"hello form"


def test_content_length_range_violation_stores_nothing(s3, bucket):
    post = presign(s3, bucket, "big.bin", [["content-length-range", 1, 1024]])
    resp = upload(post, os.urandom(4096))
    assert resp.status_code == 400, resp.text
    assert "<Code>EntityTooLarge</Code>" in resp.text
    assert missing(s3, bucket, "big.bin")
    assert harness.list_all_keys(s3, bucket) == []


def test_tampered_policy_is_refused(s3, bucket):
    post = presign(s3, bucket, "t.bin", [["content-length-range", 1, 10]])
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    policy["conditions"] = [c for c in policy["conditions"]
                            if not (isinstance(c, list) and c[0] == "content-length-range")]
    forged = base64.b64encode(json.dumps(policy).encode()).decode()
    resp = upload(post, os.urandom(100), policy=forged)
    assert resp.status_code == 403, resp.text
    assert "<Code>SignatureDoesNotMatch</Code>" in resp.text
    assert missing(s3, bucket, "t.bin")


def test_expired_policy_is_refused(s3, bucket):
    post = presign(s3, bucket, "late.bin", expires=-60)
    resp = upload(post, b"too late")
    assert resp.status_code == 403, resp.text
    assert "<Code>AccessDenied</Code>" in resp.text
    assert "Policy expired" in resp.text
    assert missing(s3, bucket, "late.bin")


def test_key_outside_starts_with_is_refused(s3, bucket):
    post = presign(s3, bucket, "uploads/${filename}")
    resp = upload(post, b"sneaky", key="elsewhere/x.bin")
    assert resp.status_code == 403, resp.text
    assert "<Code>AccessDenied</Code>" in resp.text
    assert missing(s3, bucket, "elsewhere/x.bin")


def test_unsigned_extra_field_is_refused(s3, bucket):
    post = presign(s3, bucket, "extra.bin")
    resp = upload(post, b"data", **{"x-amz-meta-unsigned": "1"})
    assert resp.status_code == 403, resp.text
    assert "Extra input fields" in resp.text
    assert missing(s3, bucket, "extra.bin")
