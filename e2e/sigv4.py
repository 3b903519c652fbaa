"""A small, independent AWS Signature Version 4 signer for hand-made requests.

The SDKs never send some of the request shapes the tests need (a seed-signed `aws-chunked` body
over plain HTTP, an unsigned trailer with a checksum, a deliberately broken chunk signature), so
the tests build those requests themselves with this module and send them with `requests`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import zlib
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def uri_encode_path(path: str) -> str:
    return quote(path, safe="/-_.~")


class Signer:
    def __init__(self, access_key: str, secret_key: str, region: str = "us-east-1",
                 now: dt.datetime | None = None):
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        now = now or dt.datetime.now(dt.timezone.utc)
        self.amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        self.date = now.strftime("%Y%m%d")
        self.scope = f"{self.date}/{region}/s3/aws4_request"
        self.key = signing_key(secret_key, self.date, region)

    def sign_headers(self, method: str, host: str, path: str, headers: dict[str, str],
                     payload_hash: str, query: dict[str, str] | None = None) -> dict[str, str]:
        """Return `headers` plus x-amz-date, x-amz-content-sha256, host and Authorization."""
        h = {k.lower(): str(v).strip() for k, v in headers.items()}
        h["host"] = host
        h["x-amz-date"] = self.amz_date
        h["x-amz-content-sha256"] = payload_hash
        signed = sorted(h)
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in sorted((query or {}).items()))
        canonical = "\n".join([
            method,
            uri_encode_path(path),
            canonical_query,
            "".join(f"{k}:{h[k]}\n" for k in signed),
            ";".join(signed),
            payload_hash,
        ])
        sts = "\n".join(["AWS4-HMAC-SHA256", self.amz_date, self.scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
        self.seed_signature = hmac.new(self.key, sts.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{self.scope}, "
                              f"SignedHeaders={';'.join(signed)}, "
                              f"Signature={self.seed_signature}")
        del h["host"]  # requests sets Host itself from the URL
        return h

    def chunk_signature(self, previous: str, chunk: bytes) -> str:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, previous,
                         EMPTY_SHA256, hashlib.sha256(chunk).hexdigest()])
        return hmac.new(self.key, sts.encode(), hashlib.sha256).hexdigest()


def signed_chunked_put(signer: Signer, host: str, path: str, data: bytes,
                       chunk_size: int = 64 * 1024, corrupt_chunk: int | None = None,
                       extra_headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    """Headers and body of a PUT with a `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` aws-chunked body.

    With `corrupt_chunk=i` the i-th chunk's signature is computed over different bytes, as if
    the chunk had been altered in flight.
    """
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    encoded_len = sum(len(f"{len(c):x};chunk-signature=") + 64 + 2 + len(c) + 2 for c in chunks)
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(encoded_len),
        "x-amz-decoded-content-length": str(len(data)),
    }
    headers.update(extra_headers or {})
    signed = signer.sign_headers("PUT", host, path, headers, STREAMING_SIGNED)
    previous = signer.seed_signature
    body = bytearray()
    for i, chunk in enumerate(chunks):
        signed_bytes = chunk + b"!" if corrupt_chunk == i else chunk
        sig = signer.chunk_signature(previous, signed_bytes)
        previous = sig
        body += f"{len(chunk):x};chunk-signature={sig}\r\n".encode() + chunk + b"\r\n"
    assert len(body) == encoded_len
    return signed, bytes(body)


def unsigned_trailer_put(signer: Signer, host: str, path: str, data: bytes,
                         chunk_size: int = 64 * 1024,
                         crc_of: bytes | None = None) -> tuple[dict, bytes]:
    """Headers and body of a PUT with an unsigned aws-chunked body and a CRC32 trailer.

    `crc_of` lets a test send a trailer checksum of different bytes than the body.
    """
    crc = zlib.crc32(data if crc_of is None else crc_of) & 0xFFFFFFFF
    crc_b64 = base64.b64encode(crc.to_bytes(4, "big")).decode()
    body = bytearray()
    for i in range(0, len(data), chunk_size):
        chunk = data[i:i + chunk_size]
        body += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    body += b"0\r\n" + f"x-amz-checksum-crc32:{crc_b64}\r\n".encode() + b"\r\n"
    headers = {
        "content-encoding": "aws-chunked",
        "content-length": str(len(body)),
        "x-amz-decoded-content-length": str(len(data)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    signed = signer.sign_headers("PUT", host, path, headers, STREAMING_UNSIGNED_TRAILER)
    return signed, bytes(body)
