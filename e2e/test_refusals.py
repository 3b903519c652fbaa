"""Nothing is silently accepted: a request for a feature Hamster does not carry out answers
501 NotImplemented and changes nothing.

Proves, with boto3 and plain signed forms, that object lock asked for in any way (retention and
legal-hold headers on PutObject, CopyObject and CreateMultipartUpload, the same fields in a POST
form, a lock-enabled CreateBucket, and the `?object-lock`, `?retention` and `?legal-hold`
subresources) is refused with a message naming it, and that the refused request stored nothing:
no object, no upload, no bucket. The same holds for server-side encryption: SSE-S3 (AES256
too), SSE-KMS and SSE-C headers on PUT, GET, HEAD, copies, multipart uploads and parts, their
POST form fields, and PutBucketEncryption; in particular a GET with a customer key does not
return the (unencrypted) bytes. ACLs that would share access (`public-read`,
`public-read-write`, `authenticated-read`, `x-amz-grant-*`) are refused on CreateBucket,
PutObject, CopyObject, CreateMultipartUpload and POST forms, while the owner-only ones
(`private`, `bucket-owner-full-control`, `bucket-owner-read`) keep working; `?torrent` is
refused for GET, PUT and DELETE instead of answering as a plain GET.
"""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from botocore.exceptions import ClientError

import harness
import sigv4
from conftest import unique_bucket

RETAIN_UNTIL = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def refused(call, *args, mentions: str = "", **kwargs) -> ClientError:
    """Runs a boto3 call that must answer 501 NotImplemented, naming `mentions`."""
    with pytest.raises(ClientError) as e:
        call(*args, **kwargs)
    assert harness.error_code(e.value) == "NotImplemented", e.value.response
    assert harness.http_status(e.value) == 501
    assert mentions in e.value.response["Error"].get("Message", ""), e.value.response
    return e.value


def absent(s3, bucket: str, key: str) -> bool:
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key=key)
    return harness.http_status(e.value) == 404


def form_upload(s3, bucket: str, key: str, fields: dict[str, str]) -> requests.Response:
    """A signed POST form whose policy covers `fields`, so only the feature check can refuse it."""
    post = s3.generate_presigned_post(
        Bucket=bucket, Key=key, Fields=dict(fields),
        Conditions=[{k: v} for k, v in fields.items()], ExpiresIn=300)
    return requests.post(post["url"], data=post["fields"], files={"file": ("f", b"form body")},
                         timeout=60)


# --- object lock --------------------------------------------------------------------------

LOCK_ARGS = [
    {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": RETAIN_UNTIL},
    {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": RETAIN_UNTIL},
    {"ObjectLockLegalHoldStatus": "ON"},
]


@pytest.mark.parametrize("lock", LOCK_ARGS)
def test_put_with_object_lock_is_refused_and_stores_nothing(s3, bucket, lock):
    refused(s3.put_object, Bucket=bucket, Key="worm", Body=b"keep me", mentions="Object lock",
            **lock)
    assert absent(s3, bucket, "worm")


@pytest.mark.parametrize("lock", LOCK_ARGS)
def test_copy_with_object_lock_is_refused(s3, bucket, lock):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    refused(s3.copy_object, Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
            mentions="Object lock", **lock)
    assert absent(s3, bucket, "dst")


@pytest.mark.parametrize("lock", LOCK_ARGS)
def test_multipart_with_object_lock_is_refused(s3, bucket, lock):
    refused(s3.create_multipart_upload, Bucket=bucket, Key="big", mentions="Object lock", **lock)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_lock_enabled_bucket_is_refused_and_not_created(s3):
    name = unique_bucket("lock")
    refused(s3.create_bucket, Bucket=name, ObjectLockEnabledForBucket=True,
            mentions="x-amz-bucket-object-lock-enabled")
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert harness.http_status(e.value) == 404
    # Asking for a bucket without lock is asking for what Hamster makes.
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=False)
    s3.delete_bucket(Bucket=name)


@pytest.mark.parametrize("field", [
    {"x-amz-object-lock-mode": "COMPLIANCE",
     "x-amz-object-lock-retain-until-date": "2030-01-01T00:00:00Z"},
    {"x-amz-object-lock-legal-hold": "ON"},
])
def test_form_upload_with_object_lock_is_refused(s3, bucket, field):
    resp = form_upload(s3, bucket, "formed", field)
    assert resp.status_code == 501, resp.text
    assert "<Code>NotImplemented</Code>" in resp.text
    assert "Object lock" in resp.text
    assert absent(s3, bucket, "formed")


def test_lock_configuration_subresource_is_not_served(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_object_lock_configuration(Bucket=bucket)
    # Either answer is honest: not implemented, or AWS's "this bucket has no lock".
    assert harness.error_code(e.value) in ("NotImplemented", "ObjectLockConfigurationNotFoundError")
    refused(s3.put_object_lock_configuration, Bucket=bucket,
            ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {
                "DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})


def test_retention_and_legal_hold_subresources_are_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    refused(s3.put_object_retention, Bucket=bucket, Key="k",
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": RETAIN_UNTIL})
    refused(s3.get_object_retention, Bucket=bucket, Key="k")
    refused(s3.put_object_legal_hold, Bucket=bucket, Key="k", LegalHold={"Status": "ON"})
    refused(s3.get_object_legal_hold, Bucket=bucket, Key="k")
    # The refused requests left the object as it was, deletable at once.
    s3.delete_object(Bucket=bucket, Key="k")
    assert absent(s3, bucket, "k")


# --- server-side encryption ---------------------------------------------------------------

SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}
SSE_ARGS = [
    {"ServerSideEncryption": "AES256"},
    {"ServerSideEncryption": "aws:kms"},
    {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/mine",
     "SSEKMSEncryptionContext": "e30=", "BucketKeyEnabled": True},
    SSE_C,
]


@pytest.mark.parametrize("sse", SSE_ARGS)
def test_encrypted_put_is_refused_and_stores_nothing(s3, bucket, sse):
    refused(s3.put_object, Bucket=bucket, Key="secret", Body=b"plain text marker",
            mentions="encrypt", **sse)
    assert absent(s3, bucket, "secret")


def test_read_with_customer_key_never_returns_the_bytes(s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"stored unencrypted")
    refused(s3.get_object, Bucket=bucket, Key="plain", mentions="SSE-C", **SSE_C)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="plain", **SSE_C)
    assert harness.http_status(e.value) == 501


@pytest.mark.parametrize("sse", [
    {"ServerSideEncryption": "AES256"},
    SSE_C,
    {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": "k" * 32},
])
def test_encrypted_copy_is_refused(s3, bucket, sse):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    refused(s3.copy_object, Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
            mentions="encrypt", **sse)
    assert absent(s3, bucket, "dst")


@pytest.mark.parametrize("sse", [{"ServerSideEncryption": "AES256"}, SSE_C])
def test_encrypted_multipart_upload_is_refused(s3, bucket, sse):
    refused(s3.create_multipart_upload, Bucket=bucket, Key="big", mentions="encrypt", **sse)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_parts_with_customer_keys_are_refused(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    refused(s3.upload_part, Bucket=bucket, Key="big", UploadId=upload, PartNumber=1,
            Body=b"part", mentions="SSE-C", **SSE_C)
    refused(s3.upload_part_copy, Bucket=bucket, Key="big", UploadId=upload, PartNumber=2,
            CopySource={"Bucket": bucket, "Key": "src"}, mentions="SSE-C",
            CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey="k" * 32)
    assert s3.list_parts(Bucket=bucket, Key="big", UploadId=upload).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload)


@pytest.mark.parametrize("field", [
    {"x-amz-server-side-encryption": "AES256"},
    {"x-amz-server-side-encryption-customer-algorithm": "AES256"},
])
def test_form_upload_with_encryption_is_refused(s3, bucket, field):
    resp = form_upload(s3, bucket, "formed", field)
    assert resp.status_code == 501, resp.text
    assert "<Code>NotImplemented</Code>" in resp.text
    assert absent(s3, bucket, "formed")


def test_bucket_encryption_settings_are_not_accepted(s3, bucket):
    refused(s3.put_bucket_encryption, Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    with pytest.raises(ClientError) as e:
        s3.get_bucket_encryption(Bucket=bucket)
    # Either answer is honest: not implemented, or AWS's "no encryption configured".
    assert harness.error_code(e.value) in (
        "NotImplemented", "ServerSideEncryptionConfigurationNotFoundError")


# --- ACLs that would share access, and BitTorrent -----------------------------------------

SHARING_ACLS = ["public-read", "public-read-write", "authenticated-read"]
OWNER_ONLY_ACLS = ["private", "bucket-owner-full-control", "bucket-owner-read"]
ALL_USERS = 'uri="http://acs.amazonaws.com/groups/global/AllUsers"'


@pytest.mark.parametrize("acl", [{"ACL": a} for a in SHARING_ACLS] + [{"GrantRead": ALL_USERS}])
def test_bucket_with_sharing_acl_is_refused_and_not_created(s3, acl):
    name = unique_bucket("acl")
    refused(s3.create_bucket, Bucket=name, mentions="ACL", **acl)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert harness.http_status(e.value) == 404


@pytest.mark.parametrize("acl", OWNER_ONLY_ACLS)
def test_owner_only_acls_are_accepted(s3, acl):
    name = unique_bucket("acl")
    s3.create_bucket(Bucket=name, ACL=acl)
    try:
        s3.put_object(Bucket=name, Key="k", Body=b"mine", ACL=acl)
        s3.copy_object(Bucket=name, Key="c", CopySource={"Bucket": name, "Key": "k"}, ACL=acl)
        upload = s3.create_multipart_upload(Bucket=name, Key="m", ACL=acl)["UploadId"]
        s3.abort_multipart_upload(Bucket=name, Key="m", UploadId=upload)
        assert s3.get_object(Bucket=name, Key="c")["Body"].read() == b"mine"
        grants = s3.get_object_acl(Bucket=name, Key="k")["Grants"]
        assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    finally:
        harness.empty_and_delete_bucket(s3, name)


@pytest.mark.parametrize("acl", [{"ACL": a} for a in SHARING_ACLS]
                         + [{"GrantRead": ALL_USERS}, {"GrantFullControl": 'id="someone"'}])
def test_object_writes_with_sharing_acl_are_refused(s3, bucket, acl):
    s3.put_object(Bucket=bucket, Key="src", Body=b"source")
    refused(s3.put_object, Bucket=bucket, Key="shared", Body=b"x", mentions="ACL", **acl)
    assert absent(s3, bucket, "shared")
    refused(s3.copy_object, Bucket=bucket, Key="shared", mentions="ACL",
            CopySource={"Bucket": bucket, "Key": "src"}, **acl)
    assert absent(s3, bucket, "shared")
    refused(s3.create_multipart_upload, Bucket=bucket, Key="shared", mentions="ACL", **acl)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_form_upload_acl_field(s3, bucket):
    resp = form_upload(s3, bucket, "public", {"acl": "public-read"})
    assert resp.status_code == 501, resp.text
    assert "<Code>NotImplemented</Code>" in resp.text
    assert absent(s3, bucket, "public")
    resp = form_upload(s3, bucket, "private", {"acl": "private"})
    assert resp.status_code == 204, resp.text
    assert s3.get_object(Bucket=bucket, Key="private")["Body"].read() == b"form body"


def test_torrent_is_not_served(s3, shared_node, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"not a torrent")
    refused(s3.get_object_torrent, Bucket=bucket, Key="k", mentions="Torrent")
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    for method in ["PUT", "DELETE"]:
        path = f"/{bucket}/k"
        headers = signer.sign_headers(method, shared_node.s3_addr, path, {}, sigv4.EMPTY_SHA256,
                                      query={"torrent": ""})
        resp = requests.request(method, f"{shared_node.endpoint}{path}?torrent=", headers=headers,
                                timeout=30)
        assert resp.status_code == 501, (method, resp.text)
        assert "<Code>NotImplemented</Code>" in resp.text
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"not a torrent"
