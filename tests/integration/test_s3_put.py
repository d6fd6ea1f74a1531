"""Aws.put_bytes and get_bytes (ingest_common.s3_put, not botocore), and put_many (from
threads, ingest_common.s3_put_blocking), against a real S3 endpoint: what they store and
read, and that their failures are the exceptions the aiobotocore client would raise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from ingest_common.aws import MAX_ATTEMPTS, OBJECT_THREADS, Aws, ObjectTooLarge
from ingest_common.s3_put_blocking import ObjectPut
from ingest_common.s3_request import object_headers
from ingest_common.telemetry.tracing import tracer
from ingest_devstack.local import listening_socket, refused_port
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode


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
    with refused_port() as port:  # refuses connections
        closed = f"http://127.0.0.1:{port}"
        settings = aws.settings.model_copy(update={"aws_endpoint_url": closed})
        async with Aws(settings) as unreachable:
            with pytest.raises(EndpointConnectionError):
                await unreachable.put_bytes(settings.previews_bucket, "k", b"x", content_type="a/b")


async def test_a_missing_object_is_the_same_client_error_as_botocores(aws: Aws) -> None:
    bucket = aws.settings.uploads_bucket
    with pytest.raises(ClientError) as ours:
        await aws.get_bytes(bucket, "originals/nobody/here.svg")
    with pytest.raises(ClientError) as botocores:
        await aws.s3.get_object(Bucket=bucket, Key="originals/nobody/here.svg")
    assert ours.value.response["Error"]["Code"] == "NoSuchKey"
    assert ours.value.response["Error"]["Code"] == botocores.value.response["Error"]["Code"]
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert ours.value.operation_name == botocores.value.operation_name == "GetObject"


async def test_an_object_over_the_limit_is_refused_before_its_body_is_read(aws: Aws) -> None:
    bucket = aws.settings.uploads_bucket
    await aws.put_bytes(bucket, "big.svg", b"x" * 5000, content_type="image/svg+xml")
    with pytest.raises(ObjectTooLarge) as caught:
        await aws.get_bytes(bucket, "big.svg", max_bytes=4999)
    assert (caught.value.size, caught.value.limit) == (5000, 4999)
    assert await aws.get_bytes(bucket, "big.svg", max_bytes=5000) == b"x" * 5000


async def test_a_get_from_an_unreachable_endpoint_is_botocores_connection_error(aws: Aws) -> None:
    with refused_port() as port:
        closed = f"http://127.0.0.1:{port}"
        settings = aws.settings.model_copy(update={"aws_endpoint_url": closed})
        async with Aws(settings) as unreachable:
            with pytest.raises(EndpointConnectionError):
                await unreachable.get_bytes(settings.uploads_bucket, "k")


def _svgs(bucket: str, count: int) -> list[ObjectPut]:
    headers = object_headers("image/svg+xml", "private, max-age=0")
    return [
        ObjectPut(bucket, f"originals/many/{i}.svg", f"<svg>{i}</svg>".encode() * i, headers)
        for i in range(count)
    ]


async def test_put_many_stores_every_object_with_its_headers(aws: Aws) -> None:
    # More objects than the threads send at once: several shares, queued on the threads.
    objects = _svgs(aws.settings.uploads_bucket, 3 * aws.settings.s3_concurrency + 1)

    await aws.put_many(objects)

    for put in objects:
        assert await aws.get_bytes(put.bucket, put.key) == put.body
    head = await aws.s3.head_object(Bucket=objects[5].bucket, Key=objects[5].key)
    assert (head["ContentType"], head["CacheControl"]) == ("image/svg+xml", "private, max-age=0")


async def test_put_many_raises_the_first_error_once_every_put_has_ended(aws: Aws) -> None:
    objects = _svgs(aws.settings.uploads_bucket, 12)
    objects[7] = ObjectPut("no-such-bucket-here", "k.svg", b"<svg/>", objects[7].headers)

    with pytest.raises(ClientError) as caught:
        await aws.put_many(objects)

    assert caught.value.response["Error"]["Code"] == "NoSuchBucket"
    for put in objects[:7] + objects[8:]:  # the others are stored, none is left half done
        assert await aws.get_bytes(put.bucket, put.key) == put.body


async def test_put_many_to_an_unreachable_endpoint_is_botocores_connection_error(
    aws: Aws,
) -> None:
    with refused_port() as port:
        settings = aws.settings.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{port}"})
        async with Aws(settings) as unreachable:
            with pytest.raises(EndpointConnectionError):
                await unreachable.put_many(_svgs(settings.uploads_bucket, 3))


async def test_put_many_draws_a_client_span_per_put_under_the_callers(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    objects = _svgs(aws.settings.uploads_bucket, 2 * OBJECT_THREADS + 1)
    objects[-1] = ObjectPut("no-such-bucket-here", "k.svg", b"<svg/>", objects[-1].headers)
    with tracer().start_as_current_span("caller") as caller, pytest.raises(ClientError):
        await aws.put_many(objects)

    context = caller.get_span_context()
    puts = [s for s in new_spans() if s.context.trace_id == context.trace_id]
    puts = [s for s in puts if s.name == "S3.PutObject"]
    assert sorted(str((s.attributes or {})["aws.s3.key"]) for s in puts) == sorted(
        put.key for put in objects
    )
    assert all(s.kind is SpanKind.CLIENT for s in puts)
    assert all(s.parent is not None and s.parent.span_id == context.span_id for s in puts)
    assert all(s.start_time is not None and s.end_time is not None for s in puts)
    assert all(s.start_time <= s.end_time for s in puts)  # type: ignore[operator]
    (failed,) = [s for s in puts if s.status.status_code is StatusCode.ERROR]
    assert (failed.attributes or {})["error.type"] == "NoSuchBucket"
    assert (failed.attributes or {})["http.status_code"] == 404


async def test_get_many_reads_every_object_in_order(aws: Aws) -> None:
    objects = _svgs(aws.settings.uploads_bucket, 2 * aws.settings.s3_concurrency + 3)
    await aws.put_many(objects)

    got = await aws.get_many(aws.settings.uploads_bucket, [put.key for put in objects][::-1])

    assert got == [put.body for put in objects][::-1]
    assert await aws.get_many(aws.settings.uploads_bucket, []) == []


async def test_get_many_of_a_missing_object_is_botocores_no_such_key_and_its_span_no_error(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    objects = _svgs(aws.settings.uploads_bucket, 3)
    await aws.put_many(objects)
    keys = [objects[0].key, "originals/many/missing.svg", objects[2].key]

    with tracer().start_as_current_span("caller") as caller, pytest.raises(ClientError) as caught:
        await aws.get_many(aws.settings.uploads_bucket, keys)

    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
    assert caught.value.operation_name == "GetObject"
    context = caller.get_span_context()
    gets = [s for s in new_spans() if s.context.trace_id == context.trace_id]
    gets = [s for s in gets if s.name == "S3.GetObject"]
    by_key = {str((s.attributes or {})["aws.s3.key"]): s for s in gets}
    assert sorted(by_key) == sorted(keys)
    missing = by_key["originals/many/missing.svg"]
    # A 404 is an answer (the object is not there), not a failure: as botocore's GET span.
    assert (missing.attributes or {})["http.status_code"] == 404
    assert missing.status.status_code is StatusCode.OK
    assert all(s.kind is SpanKind.CLIENT for s in gets)
    assert all((s.attributes or {})["rpc.method"] == "GetObject" for s in gets)


async def test_closing_waits_only_for_the_calls_under_way_not_the_shares_left(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A black-holed S3: connections are accepted (the listening socket's backlog) and never
    # answered, so each call waits its read timeout. A handler cancelled at stop drops the
    # shares still queued behind the calls under way, and closing waits only for those.
    monkeypatch.setattr("ingest_common.aws.S3_READ_TIMEOUT", 1.0)
    with listening_socket() as silent:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = aws.settings.model_copy(
            update={"aws_endpoint_url": endpoint, "s3_concurrency": OBJECT_THREADS}
        )
        client = Aws(settings)
        await client.__aenter__()
        # One object per share: twenty shares queued on the threads, two under way at once.
        puts = asyncio.create_task(client.put_many(_svgs(settings.uploads_bucket, 20)))
        await asyncio.sleep(0.3)
        puts.cancel()
        started = time.monotonic()
        await client.__aexit__(None, None, None)
        closed_after = time.monotonic() - started

    # The calls under way: at most MAX_ATTEMPTS read timeouts and the backoffs between them
    # (full jitter, at most 1 s, 2 s, ...), with 3 s to spare; it read 5.5 s here. Sending the
    # shares left would take at least ten rounds of MAX_ATTEMPTS timeouts (30 s).
    under_way = MAX_ATTEMPTS * 1.0 + sum(2.0**retry for retry in range(MAX_ATTEMPTS - 1))
    assert closed_after < under_way + 3, closed_after
    with pytest.raises(asyncio.CancelledError):
        await puts
