"""PUT of an object from a thread that may block: how render workers store their renditions.

An image's eight rendition PUTs were the largest share of the processor's event loop (signing,
aiohttp, socket writes: 28 % of its samples, `bench/README.md`), and one event loop is one CPU
however many render workers there are. Stored by the worker that rendered them, they scale with
the workers and never cross the worker's socket. The request is `s3_put`'s (`s3_request`): the
same endpoint, SigV4 signature, retries (botocore's standard mode: errors that may pass,
full-jitter backoff) and exceptions (`ClientError` with S3's code, botocore's connection
errors), over one keep-alive HTTP/1.1 connection per thread and host (`http1`).

A worker has no tracer: each PUT returns a `PutOutcome` (its timings, status, retries, error)
from which the processor draws the `S3.PutObject` span afterwards, as it draws render spans.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ingest_common.http1 import Http1Connection
from ingest_common.s3_request import S3Endpoint, backoff, client_error, worth_retrying
from ingest_common.sigv4 import Credentials, sign

# A reused keep-alive connection the server has closed meanwhile fails before any answer with
# one of these; the request is sent again at once on a new connection, as urllib3 does, rather
# than spend one of its attempts.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True, slots=True)
class PutSettings:
    """How a worker's PUTs reach S3: what `Aws` configures for its own client."""

    endpoint: S3Endpoint
    connect_timeout: float
    read_timeout: float  # per socket read, as botocore's
    max_attempts: int


@dataclass(frozen=True, slots=True)
class PutOutcome:
    """What one PUT did, for the caller's records and span: its object, its wall-clock
    timings (ns), the last HTTP status (0: no answer), and the error it ended with, if any."""

    bucket: str
    key: str
    host: str
    size: int
    started_ns: int
    ended_ns: int
    status: int = 0
    etag: str = ""
    request_id: str = ""
    retries: int = 0
    error: Exception | None = None


class _ConnectFailed(Exception):
    """The connection could not be made (wraps the OSError): no request was sent."""


class BlockingPutter:
    """PUTs objects with blocking I/O; safe to share between threads (connections are each
    thread's own)."""

    def __init__(self, settings: PutSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        # One for every connection of every thread (thread-safe): making one loads the CA
        # bundle, which a connection per thread and host would otherwise repeat.
        https = settings.endpoint.scheme == "https"
        self._tls = ssl.create_default_context() if https else None

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        headers: Mapping[str, str],
        credentials: Credentials,
    ) -> PutOutcome:
        """Put ``body`` at ``key``, with retries; never raises for S3's or the network's
        errors: they are the outcome's ``error``."""
        endpoint = self.settings.endpoint
        host, path = endpoint.address(bucket, key)
        started = time.time_ns()
        retries = 0
        status, request_id = 0, ""
        while True:
            try:
                status, reply_headers, content = self._once(host, path, body, headers, credentials)
                request_id = reply_headers.get("x-amz-request-id", "")
                if status >= 300:
                    raise client_error("PutObject", status, content, reply_headers)
                etag = reply_headers.get("etag", "").strip('"')
                return PutOutcome(
                    bucket, key, host, len(body), started, time.time_ns(),
                    status, etag, request_id, retries,
                )  # fmt: skip
            except (OSError, http.client.HTTPException, ClientError, _ConnectFailed) as exc:
                if not isinstance(exc, ClientError):
                    self._drop(host)
                if retries + 1 >= self.settings.max_attempts or not worth_retrying(exc):
                    error = _as_botocore(exc, f"{endpoint.scheme}://{host}{path}")
                    return PutOutcome(
                        bucket, key, host, len(body), started, time.time_ns(),
                        status, "", request_id, retries, error,
                    )  # fmt: skip
            time.sleep(backoff(retries))
            retries += 1

    def close(self) -> None:
        """Close this thread's connections."""
        for host in list(self._connections()):
            self._drop(host)

    def _once(
        self,
        host: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        credentials: Credentials,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request: its status, headers (names in lower case) and body."""
        signed = sign(
            "PUT",
            host,
            path,
            headers,
            body,
            credentials=credentials,
            region=self.settings.endpoint.region,
            now=datetime.now(UTC),
        )
        signed["host"] = host
        connection, reused = self._connection(host)
        try:
            reply = connection.request("PUT", path, signed, body)
        except _STALE:
            if not reused:
                raise
            self._drop(host)
            connection, _ = self._connection(host)
            reply = connection.request("PUT", path, signed, body)
        if reply.will_close:
            self._drop(host)
        return reply.status, reply.headers, reply.body

    def _connections(self) -> dict[str, Http1Connection]:
        connections: dict[str, Http1Connection] | None = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        return connections

    def _connection(self, host: str) -> tuple[Http1Connection, bool]:
        """This thread's connection to ``host`` and whether it was open already."""
        connections = self._connections()
        if (connection := connections.get(host)) is not None:
            return connection, True
        settings = self.settings
        address = urlsplit(f"//{host}")  # host[:port], an IPv6 literal in brackets
        try:
            connection = Http1Connection(
                address.hostname or host,
                address.port or (80 if self._tls is None else 443),
                tls=self._tls,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
            )
        except OSError as exc:
            raise _ConnectFailed(str(exc)) from exc
        connections[host] = connection
        return connection, False

    def _drop(self, host: str) -> None:
        connection = self._connections().pop(host, None)
        if connection is not None:
            connection.close()


def _as_botocore(exc: BaseException, url: str) -> Exception:
    """The exception the aiobotocore client would have raised (as `aws_http` maps aiohttp's);
    its cause as text, so that it pickles."""
    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, _ConnectFailed):
        if isinstance(exc.__cause__, socket.timeout | TimeoutError):
            return ConnectTimeoutError(endpoint_url=url, error=str(exc))
        return EndpointConnectionError(endpoint_url=url, error=str(exc))
    if isinstance(exc, socket.timeout | TimeoutError):
        return ReadTimeoutError(endpoint_url=url, error=str(exc))
    return ConnectionClosedError(endpoint_url=url, error=f"{type(exc).__name__}: {exc}")
