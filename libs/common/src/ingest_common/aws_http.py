"""Signed AWS requests over aiohttp, where botocore's machinery costs more than the call: what
`s3_put` (an S3 object's PUT and GET), `aws_json` (SQS's and EventBridge's calls) and
`aws_query` (SNS's PublishBatch) share; the latter two POST every call to `/` (`ServiceApi`).

Each behaves as the aiobotocore client it stands in for: the same credentials (the session's
chain, refreshed when they expire), timeouts, retries (standard mode: errors that may pass,
full-jitter backoff) and exceptions (`ClientError` with the service's error code, botocore's
connection errors), so callers catch one family of exceptions whichever client made the call;
and the instrumentor's CLIENT span `<Service>.<Operation>` under its rules (`aws_spans`): only
inside a trace, and none for the calls that have messaging spans of ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self, TypeVar
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
from multidict import CIMultiDictProxy
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ingest_common.s3_request import backoff, worth_retrying
from ingest_common.sigv4 import Credentials, sign
from ingest_common.telemetry.aws_spans import MESSAGING_CALLS
from ingest_common.telemetry.tracing import call_spans_under

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallSettings:
    """How calls are made, as the aiobotocore client's config says."""

    connect_timeout: float
    read_timeout: float  # per socket read, as botocore's
    max_attempts: int
    connections: int  # kept open at most


class SignedHttp:
    """An aiohttp session that signs with the credentials of ``session`` (aiobotocore's) and
    makes each call's attempts as botocore would; open with `async with`."""

    def __init__(self, session: AioSession, calls: CallSettings) -> None:
        self._aws_session = session
        self._max_attempts = max(1, calls.max_attempts)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=calls.connect_timeout, sock_read=calls.read_timeout
        )
        self._connections = calls.connections
        self._http: aiohttp.ClientSession | None = None
        self._tracer = trace.get_tracer(f"ingest.{type(self).__module__.rpartition('.')[2]}")

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(
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
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, f"{type(self).__name__} used outside `async with`"
        return self._http

    async def credentials(self) -> Credentials:
        # The session's provider chain (environment, profile, the ECS task role), refreshed
        # by botocore before they expire.
        source = await self._aws_session.get_credentials()
        if source is None:
            raise NoCredentialsError()
        frozen = await source.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentialsError()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    async def traced(
        self,
        name: str,
        attributes: Callable[[], Mapping[str, AttributeValue]],
        url: str,
        once: Callable[[trace.Span | None], Awaitable[T]],
    ) -> T:
        """The `attempts` of ``once``, inside a CLIENT span ``name`` (`<Service>.<Operation>`)
        with ``attributes()`` if the caller is in a trace that keeps its calls' spans
        (INGEST_TRACE_CLIENT_SPANS) and the call has no messaging span of ours; ``once`` gets
        the span (None: none) to record the answer on."""
        if name in MESSAGING_CALLS or not call_spans_under(trace.get_current_span()):
            return await self.attempts(lambda: once(None), url, None)
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes()
        ) as span:
            return await self.attempts(lambda: once(span), url, span)

    async def attempts(
        self, once: Callable[[], Awaitable[T]], url: str, span: trace.Span | None
    ) -> T:
        """``once()`` until it succeeds, fails for good or has used every attempt; a failure
        is raised as the exception botocore would have raised."""
        retries = 0
        while True:
            try:
                return await once()
            except (aiohttp.ClientError, TimeoutError, ClientError) as exc:
                if retries + 1 >= self._max_attempts or not worth_retrying(exc):
                    raise as_botocore(exc, url) from exc
            await asyncio.sleep(backoff(retries))
            retries += 1
            if span is not None:  # the instrumentor's attribute: retries made so far
                span.set_attribute("retry_attempts", retries)


class ServiceApi(SignedHttp):
    """A service each of whose calls is a signed POST to `/` at the endpoint and region of
    ``client`` (its aiobotocore client)."""

    def __init__(
        self, session: AioSession, client: Any, service: str, signing_name: str, calls: CallSettings
    ) -> None:
        super().__init__(session, calls)
        self.service = service  # the instrumentor's service id: rpc.service, the spans' prefix
        self.region: str = client.meta.region_name
        self._signing_name = signing_name
        endpoint = urlsplit(client.meta.endpoint_url)
        self._host = endpoint.netloc
        self.url = f"{endpoint.scheme}://{endpoint.netloc}/"
        self._server: dict[str, AttributeValue] = {"server.address": endpoint.hostname or ""}
        if endpoint.port is not None:
            self._server["server.port"] = endpoint.port

    def span_attributes(self, operation: str) -> dict[str, AttributeValue]:
        """The instrumentor's attributes of a call's span, before the service's own."""
        return {
            "rpc.system": "aws-api",
            "rpc.service": self.service,
            "rpc.method": operation,
            "cloud.region": self.region,
            **self._server,
        }

    async def post(
        self,
        headers: Mapping[str, str],
        body: bytes,
        span: trace.Span | None,
        error: Callable[[int, bytes, CIMultiDictProxy[str]], ClientError],
    ) -> bytes:
        """One attempt: the answer's body, or ``error(status, body, headers)`` raised."""
        signed = sign(
            "POST",
            self._host,
            "/",
            headers,
            body,
            credentials=await self.credentials(),
            region=self.region,
            now=datetime.now(UTC),
            service=self._signing_name,
        )
        async with self.http.post(self.url, data=body, headers=signed) as reply:
            content = await reply.read()
            if span is not None:
                span.set_attribute("http.status_code", reply.status)
                if request_id := reply.headers.get("x-amzn-RequestId"):
                    span.set_attribute("aws.request_id", request_id)
            if reply.status >= 300:
                failure = error(reply.status, content, reply.headers)
                if span is not None:
                    span.set_attribute("error.type", failure.response["Error"]["Code"])
                    span.set_status(Status(StatusCode.ERROR, str(failure)[:200]))
                raise failure
            return content


def as_botocore(exc: BaseException, url: str) -> Exception:
    """The exception the aiobotocore client would have raised for aiohttp's."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, TimeoutError):  # aiohttp's read timeout is one too
        return ReadTimeoutError(endpoint_url=url, error=exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return EndpointConnectionError(endpoint_url=url, error=exc)
    return ConnectionClosedError(endpoint_url=url, error=exc)
