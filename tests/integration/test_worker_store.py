"""Render workers that store their own renditions (worker.py, s3_put_blocking.py), against the
real S3 endpoint (moto server), with a fault proxy in front of it for the outages."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import signal
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from ingest_common.aws import Aws
from ingest_common.s3_put_blocking import BlockingPutter, ObjectPut, PutOutcome, PutSettings
from ingest_common.settings import IngestSettings
from ingest_common.sigv4 import Credentials
from ingest_processor.pool import RenderPool
from ingest_processor.render import RenderRejected, RenderSpec, render_svg
from ingest_processor.renditions import StoreOrder
from ingest_processor.stored import stored_entries

from tests.reliability.proxy import FaultProxy
from tests.svgs import MDI_FORWARD

SPEC = RenderSpec(widths=(32, 64), formats=("png", "webp"))
_AMPLE = 120.0  # seconds: the timeout of renders that must not time out


@pytest.fixture
def proxy(settings: IngestSettings) -> Iterator[FaultProxy]:
    target = urlsplit(settings.aws_endpoint_url)
    with FaultProxy(str(target.hostname or "127.0.0.1"), target.port or 80) as proxy:
        yield proxy


def through(puts: PutSettings, proxy: FaultProxy, **changes: float) -> PutSettings:
    """``puts`` with the endpoint behind ``proxy`` (and other timeouts or attempts)."""
    endpoint = dataclasses.replace(puts.endpoint, host=f"127.0.0.1:{proxy.port}")
    return dataclasses.replace(puts, endpoint=endpoint, **changes)  # type: ignore[arg-type]


async def order(aws: Aws, settings: IngestSettings) -> StoreOrder:
    credentials = await aws.s3_objects.credentials()
    return StoreOrder(
        settings.previews_bucket, uuid.uuid4(), "p1", "public, max-age=60", credentials
    )


async def test_a_worker_stores_its_renditions_and_sends_back_no_bytes(
    aws: Aws, settings: IngestSettings
) -> None:
    store = await order(aws, settings)
    async with RenderPool(1, SPEC, _AMPLE, puts=aws.put_settings()) as pool:
        result = await pool.render(MDI_FORWARD, store=store)
    expected = render_svg(MDI_FORWARD, SPEC).renditions
    assert len(result.renditions) == len(expected) == 4
    entries = stored_entries(result, aws.s3_objects.endpoint, "p1")
    for rendition, reference, entry in zip(result.renditions, expected, entries, strict=True):
        put = rendition.stored
        assert put is not None
        assert put.error is None
        assert put.status == 200
        assert rendition.data == b""  # the bytes stayed in the worker
        assert rendition.size == len(reference.data) == entry["bytes"]
        key = f"renditions/{store.image}/p1/{rendition.width}.{rendition.format}"
        assert put.key == entry["key"] == key
        assert entry["profile"] == "p1"
        # The flat icon's WebP came out lossless in the worker, and its entry records it.
        assert entry.get("lossless") == (True if rendition.format == "webp" else None)
        stored = await aws.s3.get_object(Bucket=settings.previews_bucket, Key=key)
        assert await stored["Body"].read() == reference.data
        assert stored["ContentType"] == reference.content_type
        assert stored["CacheControl"] == "public, max-age=60"
        assert put.etag == hashlib.md5(reference.data).hexdigest()
        assert put.started_ns <= put.ended_ns


async def test_an_s3_outage_fails_the_store_not_the_render(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy
) -> None:
    """The render's timeout ends with the render: the PUTs that wait out a black hole past it
    fail as S3's error (retryable upstream), never as a render that took too long."""
    puts = through(aws.put_settings(), proxy, read_timeout=2.0, max_attempts=2)
    async with RenderPool(1, SPEC, _AMPLE, puts=puts) as pool:
        proxy.blackhole()
        store = await order(aws, settings)
        result = await pool.render(MDI_FORWARD, timeout=1.0, store=store)
        assert pool.stats.timeouts == 0
        with pytest.raises(ReadTimeoutError):
            stored_entries(result, aws.s3_objects.endpoint, "p1")
        assert all(r.stored and r.stored.retries == 1 for r in result.renditions)
        proxy.up()
        again = await pool.render(MDI_FORWARD, store=store)
    assert len(stored_entries(again, aws.s3_objects.endpoint, "p1")) == 4


async def test_a_worker_killed_while_storing_renders_that_image_again(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy
) -> None:
    """A render whose worker died while storing it is not its fault: it runs again whole."""
    async with RenderPool(1, SPEC, _AMPLE, puts=through(aws.put_settings(), proxy)) as pool:
        proxy.blackhole()
        store = await order(aws, settings)
        render = asyncio.ensure_future(pool.render(MDI_FORWARD, store=store))
        while proxy.counters.accepted < 1:  # its PUTs are under way, held
            await asyncio.sleep(0.02)
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        while pid in pool.worker_pids() or not pool.worker_pids():
            await asyncio.sleep(0.02)
        proxy.up()
        result = await asyncio.wait_for(render, _AMPLE)
        assert pool.stats.crashes == 1
        assert pool.stats.retries == 0
    assert len(stored_entries(result, aws.s3_objects.endpoint, "p1")) == 4


async def test_on_rendered_is_called_once_when_the_render_is_done_before_its_puts(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy
) -> None:
    """The processor ends an upload's trial on it: the PUTs a black hole holds do not delay
    it, a worker killed while storing does not call it twice, and a refused SVG never does."""
    async with RenderPool(1, SPEC, _AMPLE, puts=through(aws.put_settings(), proxy)) as pool:
        proxy.blackhole()
        rendered = asyncio.Event()
        calls = 0

        def on_rendered() -> None:
            nonlocal calls
            calls += 1
            rendered.set()

        store = await order(aws, settings)
        render = asyncio.ensure_future(
            pool.render(MDI_FORWARD, store=store, on_rendered=on_rendered)
        )
        await asyncio.wait_for(rendered.wait(), _AMPLE)
        while proxy.counters.accepted < 1:  # its PUTs are under way, held
            await asyncio.sleep(0.02)
        assert not render.done(), "the renditions are not stored yet"
        (pid,) = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)  # it renders again whole on the successor
        while pid in pool.worker_pids() or not pool.worker_pids():
            await asyncio.sleep(0.02)
        proxy.up()
        result = await asyncio.wait_for(render, _AMPLE)
        assert calls == 1
        assert len(stored_entries(result, aws.s3_objects.endpoint, "p1")) == 4

        refused = False

        def never() -> None:
            nonlocal refused
            refused = True

        with pytest.raises(RenderRejected):
            await pool.render(b"<svg", store=store, on_rendered=never)
        assert not refused


async def test_a_retiring_worker_reports_what_it_was_storing(
    aws: Aws, settings: IngestSettings
) -> None:
    """After max_renders a worker takes no more renders, but still puts and reports the
    renditions it holds before it goes."""
    async with RenderPool(1, SPEC, _AMPLE, max_renders=1, puts=aws.put_settings()) as pool:
        stores = [await order(aws, settings) for _ in range(4)]
        results = await asyncio.gather(*(pool.render(MDI_FORWARD, store=s) for s in stores))
        assert pool.stats.recycled_for_count >= 4
    for result in results:
        assert len(stored_entries(result, aws.s3_objects.endpoint, "p1")) == 4


async def test_a_store_order_needs_a_pool_that_can_store(
    aws: Aws, settings: IngestSettings
) -> None:
    async with RenderPool(1, SPEC, _AMPLE) as pool:
        with pytest.raises(ValueError, match="PutSettings"):
            await pool.render(MDI_FORWARD, store=await order(aws, settings))


# --- the blocking client itself ----------------------------------------------------------


async def put_one(aws: Aws, putter: BlockingPutter, bucket: str) -> PutOutcome:
    """One small PUT through ``putter``, from a thread (it blocks)."""
    credentials = await aws.s3_objects.credentials()
    return await asyncio.to_thread(
        putter.put_object, bucket, "k", b"x", {"content-type": "a/b"}, credentials
    )


async def test_s3s_refusal_is_a_client_error_with_its_code_and_no_retry(aws: Aws) -> None:
    put = await put_one(aws, BlockingPutter(aws.put_settings()), "no-such-bucket")
    assert isinstance(put.error, ClientError)
    assert put.error.response["Error"]["Code"] == "NoSuchBucket"
    assert put.status == 404
    assert put.retries == 0


async def test_a_refused_endpoint_is_botocores_error_after_every_attempt(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy
) -> None:
    putter = BlockingPutter(through(aws.put_settings(), proxy, max_attempts=3))
    proxy.refuse()
    put = await put_one(aws, putter, settings.previews_bucket)
    assert isinstance(put.error, EndpointConnectionError)
    assert put.retries == 2
    assert put.status == 0


async def test_a_batch_is_sent_at_once_and_each_object_keeps_its_own_outcome(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy
) -> None:
    """put_objects: every request on the wire before any answer (a black hole holds them all),
    the failed attempt sent again together, and each object's outcome its own, in order: one
    refused by S3 for good while the others are stored."""
    putter = BlockingPutter(through(aws.put_settings(), proxy, max_attempts=2))
    credentials = await aws.s3_objects.credentials()
    bucket = settings.previews_bucket
    prefix = uuid.uuid4().hex
    objects = [
        *(ObjectPut(bucket, f"{prefix}/{i}", os.urandom(100 * i + 1), {"content-type": "a/b"})
          for i in range(3)),
        ObjectPut("no-such-bucket", f"{prefix}/x", b"x", {"content-type": "a/b"}),
    ]  # fmt: skip
    proxy.blackhole()
    putting = asyncio.ensure_future(asyncio.to_thread(putter.put_objects, objects, credentials))
    for _ in range(500):  # all four held at once: none of them waits for another's answer
        if proxy.counters.accepted == len(objects):
            break
        await asyncio.sleep(0.01)
    assert proxy.counters.accepted == len(objects)
    assert not putting.done()
    proxy.up()  # resets the held connections: a failed attempt for each, then a second
    outcomes = await asyncio.wait_for(putting, _AMPLE)
    assert proxy.counters.accepted == 2 * len(objects)
    assert [outcome.key for outcome in outcomes] == [put.key for put in objects]
    for put, outcome in zip(objects[:3], outcomes, strict=False):
        assert outcome.error is None, outcome.error
        assert (outcome.status, outcome.retries, outcome.size) == (200, 1, len(put.body))
        assert outcome.etag == hashlib.md5(put.body).hexdigest()
        stored = await aws.s3.get_object(Bucket=bucket, Key=put.key)
        assert await stored["Body"].read() == put.body
    refused = outcomes[3]
    assert isinstance(refused.error, ClientError)
    assert refused.error.response["Error"]["Code"] == "NoSuchBucket"
    assert (refused.status, refused.retries, refused.etag) == (404, 1, "")


@pytest.mark.parametrize("count", [1, 3], ids=["one PUT", "a batch"])
async def test_connections_the_server_closed_are_reopened_without_spending_an_attempt(
    aws: Aws, settings: IngestSettings, proxy: FaultProxy, count: int
) -> None:
    putter = BlockingPutter(through(aws.put_settings(), proxy, max_attempts=1))
    credentials = await aws.s3_objects.credentials()
    objects = [
        ObjectPut(settings.previews_bucket, f"k{i}", b"x", {"content-type": "a/b"})
        for i in range(count)
    ]

    def put_twice() -> list[list[int]]:
        statuses = []
        for round_ in range(2):
            outcomes = putter.put_objects(objects, credentials)
            assert [outcome.error for outcome in outcomes] == [None] * count
            statuses.append([outcome.status for outcome in outcomes])
            if round_ == 0:  # every kept-alive connection is reset, as by an idle timeout
                proxy.refuse()
                proxy.up()
        return statuses

    assert await asyncio.to_thread(put_twice) == [[200] * count] * 2
    assert proxy.counters.accepted == 2 * count


async def test_a_failure_of_the_store_code_itself_is_each_renditions_outcome(
    aws: Aws, settings: IngestSettings
) -> None:
    """Not S3's error but ours (here: a session token no header can hold): the result comes,
    each rendition's outcome holding the error, instead of a render waiting for it forever."""
    store = dataclasses.replace(
        await order(aws, settings),
        credentials=Credentials("key", "secret", 42),  # type: ignore[arg-type]
    )
    async with RenderPool(1, SPEC, _AMPLE, puts=aws.put_settings()) as pool:
        result = await asyncio.wait_for(pool.render(MDI_FORWARD, store=store), _AMPLE)
    assert len(result.renditions) == 4
    for rendition in result.renditions:
        assert rendition.stored is not None
        assert isinstance(rendition.stored.error, TypeError)
        assert rendition.stored.key.startswith(f"renditions/{store.image}/p1/")
    with pytest.raises(TypeError):
        stored_entries(result, aws.s3_objects.endpoint, "p1")
