"""PUT of an object in memory over aiohttp, signed by `sigv4`: the calls every image makes most.

An image costs nine S3 calls, eight of them rendition PUTs, and botocore spends 2.1 ms of CPU
on each PUT of a small object through aiobotocore, this 0.6 ms (`bench/README.md`): the
request needs no model, no parameter validation, no event hooks. It behaves as the
aiobotocore client it stands in for: the same endpoint (botocore's resolved one), credentials
(the session's chain, refreshed when they expire), timeouts, retries (standard mode: errors
that may pass, full-jitter backoff) and exceptions (`ClientError` with S3's error code,
botocore's connection errors), and a CLIENT span `S3.PutObject` with the instrumentor's
attributes, only inside a trace. Everything else stays on the aiobotocore client.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.session import AioSession
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from ingest_common.sigv4 import Credentials, object_path, sign

# Worth another attempt, as botocore's standard retry mode judges them.
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)
_MAX_BACKOFF = 20.0
_CODE = re.compile(rb"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


@dataclass(frozen=True, slots=True)
class _Put:
    """One PUT, as every attempt of it sends it (signed afresh each time)."""

    host: str
    path: str
    url: str
    body: bytes
    headers: Mapping[str, str]


class ObjectPutter:
    """PUTs objects to the endpoint that ``s3`` (an aiobotocore S3 client) resolved, with the
    credentials of the ``session`` that made it; open with `async with`."""

    def __init__(
        self,
        session: AioSession,
        s3: Any,
        *,
        region: str,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
        connections: int,
    ) -> None:
        self._aws_session = session
        self._region = region
        endpoint = urlsplit(s3.meta.endpoint_url)
        self._scheme = endpoint.scheme
        self._endpoint_host = endpoint.netloc
        # Virtual-hosted addressing on AWS's own endpoints, as botocore's default does; path
        # style elsewhere (moto, LocalStack, a VPC endpoint URL) and for dotted bucket names.
        self._virtual = endpoint.hostname is not None and endpoint.hostname.endswith(
            "amazonaws.com"
        )
        self._max_attempts = max(1, max_attempts)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._tracer = trace.get_tracer("ingest.s3_put")

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections),
            timeout=self._timeout,
            auto_decompress=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def put_object(
        self, bucket: str, key: str, body: bytes, headers: Mapping[str, str]
    ) -> str:
        """Put ``body`` at ``key``; return its ETag (unquoted)."""
        host, path = self._address(bucket, key)
        put = _Put(host, path, f"{self._scheme}://{host}{path}", body, headers)
        parent = trace.get_current_span()
        if not parent.is_recording():  # an AWS call never starts a trace (aws_spans.py)
            return await self._attempts(put, None)
        with self._tracer.start_as_current_span(
            "S3.PutObject",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": "S3",
                "rpc.method": "PutObject",
                "cloud.region": self._region,
                "server.address": host.partition(":")[0],
                "aws.s3.bucket": bucket,
                "aws.s3.key": key,
            },
        ) as span:
            return await self._attempts(put, span)

    def _address(self, bucket: str, key: str) -> tuple[str, str]:
        if self._virtual and "." not in bucket:
            return f"{bucket}.{self._endpoint_host}", object_path(None, key)
        return self._endpoint_host, object_path(bucket, key)

    async def _attempts(self, put: _Put, span: trace.Span | None) -> str:
        retries = 0
        while True:
            try:
                return await self._once(put, span)
            except (aiohttp.ClientError, TimeoutError, ClientError) as exc:
                if retries + 1 >= self._max_attempts or not _worth_retrying(exc):
                    raise _as_botocore(exc, put.url) from exc
            await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF, 2.0**retries)))
            retries += 1
            if span is not None:  # the instrumentor's attribute: retries made so far
                span.set_attribute("retry_attempts", retries)

    async def _once(self, put: _Put, span: trace.Span | None) -> str:
        assert self._session is not None, "ObjectPutter used outside `async with`"
        signed = sign(
            "PUT",
            put.host,
            put.path,
            put.headers,
            put.body,
            credentials=await self._credentials(),
            region=self._region,
            now=datetime.now(UTC),
        )
        url = URL(put.url, encoded=True)
        async with self._session.put(url, data=put.body, headers=signed) as reply:
            content = await reply.read()
            if span is not None:
                span.set_attribute("http.status_code", reply.status)
                if request_id := reply.headers.get("x-amz-request-id"):
                    span.set_attribute("aws.request_id", request_id)
            if reply.status >= 300:
                error = _client_error(reply.status, content, reply.headers)
                if span is not None:
                    span.set_attribute("error.type", error.response["Error"]["Code"])
                    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
                raise error
            return reply.headers.get("ETag", "").strip('"')

    async def _credentials(self) -> Credentials:
        # The session's provider chain (environment, profile, the ECS task role), refreshed
        # by botocore before they expire.
        source = await self._aws_session.get_credentials()
        if source is None:
            raise NoCredentialsError()
        frozen = await source.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentialsError()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def _client_error(status: int, content: bytes, headers: Mapping[str, str]) -> ClientError:
    code = _CODE.search(content)
    message = _MESSAGE.search(content)
    response: Any = {  # the shape botocore parses an S3 error into
        "Error": {
            "Code": code.group(1).decode() if code else str(status),
            "Message": message.group(1).decode() if message else "",
        },
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": headers.get("x-amz-request-id", ""),
        },
    }
    return ClientError(response, "PutObject")


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        response = exc.response
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status in _RETRY_STATUS or response.get("Error", {}).get("Code") in _RETRY_CODES
    return True  # a connection refused, reset or timed out


def _as_botocore(exc: BaseException, url: str) -> Exception:
    """The exception the aiobotocore client would have raised, so callers catch one family."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeout is one too
        return ReadTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return EndpointConnectionError(endpoint_url=url, error=exc)
    return ConnectionClosedError(endpoint_url=url, error=exc)
