"""There is no anonymous S3 and a bad signature gets nothing in or out.

Proves, with plain unsigned HTTP requests and with boto3 clients holding wrong credentials, that
every S3 request must carry a valid SigV4 signature from a known access key: unsigned requests
get 403 AccessDenied (404 NoSuchBucket when the bucket they name does not exist, as on S3,
except an unsigned CreateBucket, which is 403), a wrong secret gets 403 SignatureDoesNotMatch, an unknown key gets 403
InvalidAccessKeyId, and in each case nothing is read or written (checked afterwards with the
right credentials).
"""

from __future__ import annotations

import pytest
import requests
from botocore.exceptions import ClientError

import harness
import sigv4


@pytest.fixture
def stored(s3, bucket):
    s3.put_object(Bucket=bucket, Key="private.txt", Body=b"only for signed readers")
    return bucket


def test_unsigned_list_buckets_is_access_denied(shared_node, stored):
    r = requests.get(shared_node.endpoint + "/", timeout=30)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert stored not in r.text


def test_unsigned_get_object_is_access_denied(shared_node, stored):
    r = requests.get(f"{shared_node.endpoint}/{stored}/private.txt", timeout=30)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert b"only for signed readers" not in r.content


def test_unsigned_put_is_refused_and_stores_nothing(shared_node, s3, stored):
    r = requests.put(f"{shared_node.endpoint}/{stored}/anonymous.txt", data=b"drive-by",
                     timeout=30)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text
    assert [o["Key"] for o in harness.list_all_keys(s3, stored)] == ["private.txt"]


def test_unsigned_request_for_a_missing_bucket_is_no_such_bucket(shared_node, stored):
    for path in ("/no-such-bucket-anon/key", "/no-such-bucket-anon"):
        r = requests.get(shared_node.endpoint + path, timeout=30)
        assert r.status_code == 404, r.text
        assert "<Code>NoSuchBucket</Code>" in r.text
    # An existing bucket tells an unsigned caller nothing more than AccessDenied.
    r = requests.get(f"{shared_node.endpoint}/{stored}/no-such-key", timeout=30)
    assert r.status_code == 403
    assert "<Code>AccessDenied</Code>" in r.text


def test_unsigned_create_bucket_is_refused(shared_node, s3):
    name = "anon-bucket-attempt"
    r = requests.put(f"{shared_node.endpoint}/{name}", timeout=30)
    assert r.status_code == 403
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_wrong_secret_is_signature_does_not_match(shared_node, stored):
    bad = shared_node.client(secret_key=shared_node.secret_key[::-1] + "x")
    with pytest.raises(ClientError) as e:
        bad.list_buckets()
    assert harness.error_code(e.value) == "SignatureDoesNotMatch"
    assert harness.http_status(e.value) == 403
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket=stored, Key="private.txt")
    assert harness.error_code(e.value) == "SignatureDoesNotMatch"


def test_put_with_wrong_secret_stores_nothing(shared_node, s3, stored):
    bad = shared_node.client(secret_key="x" * 40)
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=stored, Key="forged.txt", Body=b"forged")
    assert harness.error_code(e.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=stored, Key="private.txt", Body=b"overwritten")
    assert harness.error_code(e.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        bad.delete_object(Bucket=stored, Key="private.txt")
    assert harness.error_code(e.value) == "SignatureDoesNotMatch"
    assert [o["Key"] for o in harness.list_all_keys(s3, stored)] == ["private.txt"]
    assert s3.get_object(Bucket=stored, Key="private.txt")["Body"].read() == \
        b"only for signed readers"


def test_unknown_access_key_is_invalid_access_key_id(shared_node, stored):
    stranger = shared_node.client(access_key="AKIDUNKNOWN000000000", secret_key="y" * 40)
    with pytest.raises(ClientError) as e:
        stranger.list_buckets()
    assert harness.error_code(e.value) == "InvalidAccessKeyId"
    assert harness.http_status(e.value) == 403
    with pytest.raises(ClientError) as e:
        stranger.get_object(Bucket=stored, Key="private.txt")
    assert harness.error_code(e.value) == "InvalidAccessKeyId"


def test_body_not_matching_signed_payload_hash_is_refused(shared_node, s3, stored):
    # Sign one body, send another: the declared x-amz-content-sha256 no longer matches.
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{stored}/swapped.txt"
    headers = signer.sign_headers("PUT", shared_node.s3_addr, path, {"content-length": "8"},
                                  harness.sha256(b"original"))
    r = requests.put(shared_node.endpoint + path, data=b"swapped!", headers=headers, timeout=30)
    assert r.status_code in (400, 403), r.text
    assert "<Code>XAmzContentSHA256Mismatch</Code>" in r.text or \
        "<Code>SignatureDoesNotMatch</Code>" in r.text or "<Code>BadDigest</Code>" in r.text
    assert [o["Key"] for o in harness.list_all_keys(s3, stored)] == ["private.txt"]


def test_hand_signed_request_is_accepted(shared_node, s3, stored):
    # Guards the negative tests above: the same hand-made signing, done right, is accepted.
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{stored}/hand signed.txt"
    body = b"signed by hand"
    headers = signer.sign_headers("PUT", shared_node.s3_addr, path,
                                  {"content-length": str(len(body))}, harness.sha256(body))
    r = requests.put(shared_node.endpoint + sigv4.uri_encode_path(path), data=body,
                     headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=stored, Key="hand signed.txt")["Body"].read() == body
