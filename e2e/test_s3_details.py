"""S3 details clients and caches depend on.

Proves that a conditional GET or HEAD answered 304 Not Modified still carries the object's
ETag, Last-Modified and caching headers.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

import harness


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
