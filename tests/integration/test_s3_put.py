"""Aws.put_bytes (ingest_common.s3_put, not botocore) against a real S3 endpoint: what it stores,
and that its failures are the exceptions the aiobotocore client would raise."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from ingest_common.aws import Aws
from ingest_devstack.local import free_port


async def test_an_object_put_is_stored_with_its_headers_and_metadata(aws: Aws) -> None:
    bucket = aws.settings.previews_bucket
    key = "renditions/x/Ein Bild – grün+blau=~(1).png"  # encoded once, signed as sent
    body = bytes(range(256)) * 40
    etag = await aws.put_bytes(
        bucket,
        key,
        body,
        content_type="image/png",
        cache_control="public, max-age=31536000, immutable",
        metadata={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    head = await aws.s3.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"') == etag
    assert head["ContentType"] == "image/png"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert head["Metadata"] == {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    }
    assert await aws.get_bytes(bucket, key) == body


async def test_s3s_refusal_is_a_client_error_with_its_code(aws: Aws) -> None:
    with pytest.raises(ClientError) as caught:
        await aws.put_bytes("no-such-bucket-here", "k", b"x", content_type="text/plain")
    assert caught.value.response["Error"]["Code"] == "NoSuchBucket"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_an_unreachable_endpoint_is_botocores_connection_error(aws: Aws) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = aws.settings.model_copy(update={"aws_endpoint_url": closed})
    async with Aws(settings) as unreachable:
        with pytest.raises(EndpointConnectionError):
            await unreachable.put_bytes(settings.previews_bucket, "k", b"x", content_type="a/b")
