"""PUT and GET of an object in memory over aiohttp, signed by `sigv4`: the calls every image
makes most.

An image costs nine S3 calls, eight of them rendition PUTs and one GET of its original, and
botocore spends 2.1 ms of CPU on each PUT of a small object through aiobotocore, this 0.6 ms
(`bench/README.md`); a GET through aiobotocore was 28 % of the backfill's event loop: the
request needs no model, no parameter validation, no event hooks, no response parsing. It
behaves as the aiobotocore client it stands in for (`aws_http`): botocore's resolved
endpoint, the same credentials, timeouts, retries and exceptions (`ClientError` with S3's
error code), and a CLIENT span `S3.PutObject` or `S3.GetObject` with the instrumentor's
attributes, only inside a trace. Everything else stays on the aiobotocore client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiobotocore.session import AioSession
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from yarl import URL

from ingest_common.aws_http import CallSettings, SignedHttp
from ingest_common.s3_request import S3Endpoint, client_error
from ingest_common.sigv4 import sign
from ingest_common.telemetry.aws_spans import record_object_error


class ObjectTooLarge(Exception):
    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"{key} is {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class _Request:
    """One PUT or GET, as every attempt of it sends it (signed afresh each time)."""

    operation: str  # PutObject, GetObject
    method: str
    key: str
    host: str
    path: str
    url: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    max_bytes: int | None = None  # a GET's limit on the object's size


@dataclass(frozen=True, slots=True)
class _Reply:
    headers: Mapping[str, str]
    content: bytes


class ObjectPutter(SignedHttp):
    """PUTs and GETs objects at the endpoint and region of ``s3`` (an aiobotocore S3 client),
    with the credentials of the ``session`` that made it; open with `async with`."""

    def __init__(self, session: AioSession, s3: Any, calls: CallSettings) -> None:
        super().__init__(session, calls)
        self.endpoint = S3Endpoint.of(s3.meta.endpoint_url, s3.meta.region_name)

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        span_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> str:
        """Put ``body`` at ``key``; return its ETag (unquoted). ``span_attributes`` go on the
        PutObject span (what the object is, where a wrapping span would cost as much again)."""
        put = self._request("PutObject", bucket, key, body=body, headers=headers)
        reply = await self._traced(put, bucket, span_attributes)
        return reply.headers.get("ETag", "").strip('"')

    async def get_object(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object at ``key``; ObjectTooLarge, before its body is read, if it is over
        ``max_bytes``."""
        get = self._request("GetObject", bucket, key, max_bytes=max_bytes)
        return (await self._traced(get, bucket)).content

    def _request(
        self,
        operation: str,
        bucket: str,
        key: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
    ) -> _Request:
        host, path = self.endpoint.address(bucket, key)
        method = {"PutObject": "PUT", "GetObject": "GET"}[operation]
        url = f"{self.endpoint.scheme}://{host}{path}"
        return _Request(operation, method, key, host, path, url, body, headers or {}, max_bytes)

    async def _traced(
        self,
        request: _Request,
        bucket: str,
        extra_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> _Reply:
        return await self.traced(
            f"S3.{request.operation}",
            lambda: {
                **self.endpoint.span_attributes(
                    request.operation, request.host, bucket, request.key
                ),
                **(extra_attributes or {}),
            },
            request.url,
            lambda span: self._once(request, span),
        )

    async def _once(self, request: _Request, span: trace.Span | None) -> _Reply:
        signed = sign(
            request.method,
            request.host,
            request.path,
            request.headers,
            request.body,
            credentials=await self.credentials(),
            region=self.endpoint.region,
            now=datetime.now(UTC),
        )
        url = URL(request.url, encoded=True)
        data = request.body if request.method == "PUT" else None  # an empty PUT sends length 0
        async with self.http.request(request.method, url, data=data, headers=signed) as reply:
            if span is not None:
                span.set_attribute("http.status_code", reply.status)
                if request_id := reply.headers.get("x-amz-request-id"):
                    span.set_attribute("aws.request_id", request_id)
            length = reply.content_length
            too_large = request.max_bytes is not None and (length or 0) > request.max_bytes
            if reply.status < 300 and too_large:
                reply.close()  # the body is not read
                raise ObjectTooLarge(request.key, length or 0, request.max_bytes or 0)
            content = await reply.read()
            if reply.status >= 300:
                error = client_error(request.operation, reply.status, content, reply.headers)
                if span is not None:
                    record_object_error(span, request.operation, reply.status, error)
                raise error
            return _Reply(reply.headers, content)
