"""Streaming uploads in `aws-chunked` encoding store exactly the decoded bytes.

Several SDKs upload with `Content-Encoding: aws-chunked`, either signing every chunk
(STREAMING-AWS4-HMAC-SHA256-PAYLOAD) or sending unsigned chunks with a trailing CRC32 checksum
(STREAMING-UNSIGNED-PAYLOAD-TRAILER). These tests build such requests by hand (the signer is
checked against AWS's published example values) and prove that the stored object is the decoded
payload, not the framing; that a chunk whose signature does not verify is refused with nothing
stored; and that a trailer checksum that does not match is refused with nothing stored.
"""

from __future__ import annotations

import os

import pytest
import requests

import harness
import sigv4


def put(node, path, headers, body):
    return requests.put(node.endpoint + sigv4.uri_encode_path(path), data=body,
                        headers=headers, timeout=60)


@pytest.mark.parametrize("size", [0, 1000, 64 * 1024, 300 * 1024 + 17])
def test_signed_chunks_store_decoded_bytes(shared_node, s3, bucket, size):
    data = os.urandom(size)
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{bucket}/chunked.bin"
    headers, body = sigv4.signed_chunked_put(signer, shared_node.s3_addr, path, data)
    r = put(shared_node, path, headers, body)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="chunked.bin")
    assert got["ContentLength"] == size
    assert got["Body"].read() == data
    assert got["ETag"] == f'"{harness.md5(data)}"'
    assert "aws-chunked" not in (got.get("ContentEncoding") or "")


def test_bad_chunk_signature_is_refused_and_stores_nothing(shared_node, s3, bucket):
    data = os.urandom(200 * 1024)
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{bucket}/tampered.bin"
    headers, body = sigv4.signed_chunked_put(signer, shared_node.s3_addr, path, data,
                                             corrupt_chunk=1)
    r = put(shared_node, path, headers, body)
    assert r.status_code == 403, r.text
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert harness.list_all_keys(s3, bucket) == []


def test_unsigned_trailer_with_crc32_stores_decoded_bytes(shared_node, s3, bucket):
    data = os.urandom(150 * 1024 + 5)
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{bucket}/trailer.bin"
    headers, body = sigv4.unsigned_trailer_put(signer, shared_node.s3_addr, path, data)
    r = put(shared_node, path, headers, body)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="trailer.bin")
    assert got["Body"].read() == data


def test_wrong_trailer_checksum_is_refused_and_stores_nothing(shared_node, s3, bucket):
    data = os.urandom(10 * 1024)
    signer = sigv4.Signer(shared_node.access_key, shared_node.secret_key)
    path = f"/{bucket}/badcrc.bin"
    headers, body = sigv4.unsigned_trailer_put(signer, shared_node.s3_addr, path, data,
                                               crc_of=b"different bytes")
    r = put(shared_node, path, headers, body)
    assert r.status_code == 400, r.text
    assert "<Code>BadDigest</Code>" in r.text or "<Code>InvalidRequest</Code>" in r.text
    assert harness.list_all_keys(s3, bucket) == []
