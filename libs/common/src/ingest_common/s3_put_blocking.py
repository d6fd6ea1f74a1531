"""PUT and GET of objects from a thread that may block: how render workers store their
renditions, and how a service puts or reads several objects at once (`Aws.put_many`,
`Aws.get_many`).

An image's eight rendition PUTs were the largest share of the processor's event loop (signing,
aiohttp, socket writes: 28 % of its samples, `bench/README.md`), and one event loop is one CPU
however many render workers there are. Stored by the worker that rendered them, they scale with
the workers and never cross the worker's socket. The request is `s3_put`'s (`s3_request`): the
same endpoint, SigV4 signature, retries (botocore's standard mode: errors that may pass,
full-jitter backoff) and exceptions (`ClientError` with S3's code, botocore's connection
errors), over keep-alive HTTP/1.1 connections (`http1`): a thread's own, one per host and
request it has in flight, since `put_objects` sends a whole render's renditions at once.

A worker has no tracer: each PUT returns a `PutOutcome` (its timings, status, retries, error)
from which the processor draws the `S3.PutObject` span afterwards, as it draws render spans;
a GET's `GetOutcome` likewise.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from ingest_common.http1 import Http1Connection, Reply
from ingest_common.s3_request import S3Endpoint, backoff, client_error, worth_retrying
from ingest_common.sigv4 import Credentials, sign

# A connection of a thread: (host, slot); a thread's n-th request at once goes on its n-th.
_Place = tuple[str, int]
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


# What an attempt at a request can fail with, short of S3's answer: the attempt's error.
_FAILED = (OSError, http.client.HTTPException, _ConnectFailed)


@dataclass(frozen=True, slots=True)
class ObjectPut:
    """One object to put: where, its bytes, and its headers (`object_headers`)."""

    bucket: str
    key: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class GetOutcome:
    """What one GET did: its object's bytes (empty if it failed), and as `PutOutcome`."""

    bucket: str
    key: str
    host: str
    started_ns: int
    ended_ns: int
    status: int = 0
    request_id: str = ""
    retries: int = 0
    error: Exception | None = None
    body: bytes = b""


# The internal records below are named tuples: made for every object of every render, they
# cost a third of a frozen dataclass to build (0.23 against 0.66 µs for six fields).
class _Call(NamedTuple):
    """One PUT or GET, as every attempt at it sends it (signed afresh each time)."""

    operation: str  # PutObject, GetObject
    bucket: str
    key: str
    body: bytes = b""
    headers: Mapping[str, str] = {}

    @property
    def method(self) -> str:
        return "PUT" if self.operation == "PutObject" else "GET"


class _Request(NamedTuple):
    """A call's request as sent: signed, with its host header."""

    method: str
    host: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Attempt(NamedTuple):
    """What one attempt at a call got: an answer (``status``, its headers and body), an
    error, or both (S3's refusal)."""

    status: int = 0
    headers: Mapping[str, str] = {}  # never changed: one empty mapping serves every default
    error: Exception | None = None
    body: bytes = b""


class _Ended(NamedTuple):
    """How a call ended: its last answer, its error (botocore's), its retries and timings."""

    answer: _Attempt
    error: Exception | None
    retries: int
    host: str
    started_ns: int
    ended_ns: int


_NO_ANSWER = _Attempt()


class BlockingPutter:
    """PUTs objects with blocking I/O; safe to share between threads (connections are each
    thread's own)."""

    def __init__(self, settings: PutSettings) -> None:
        self.settings = settings
        self._local = threading.local()
        # Every thread's connections, for `close_all`.
        self._open: set[Http1Connection] = set()
        self._open_lock = threading.Lock()
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
        return self.put_objects([ObjectPut(bucket, key, body, headers)], credentials)[0]

    def put_objects(
        self, objects: Sequence[ObjectPut], credentials: Credentials
    ) -> list[PutOutcome]:
        """Put every object, each with retries; their outcomes in the same order. Never raises
        for S3's or the network's errors: they are the outcomes' ``error``.

        All at once from this thread: each request is sent on a connection of its own before
        any answer is read, so the whole takes about one round trip, not one per object, and
        costs no thread hand-off per object (a render's eight renditions: about 1 ms of CPU
        less than eight threads putting one each, `bench/put.py`). Objects whose attempt
        failed with an error that may pass are sent again together after one backoff.
        """
        calls = [_Call("PutObject", o.bucket, o.key, o.body, o.headers) for o in objects]
        return [
            PutOutcome(
                call.bucket,
                call.key,
                ended.host,
                len(call.body),
                ended.started_ns,
                ended.ended_ns,
                ended.answer.status,
                "" if ended.error else ended.answer.headers.get("etag", "").strip('"'),
                ended.answer.headers.get("x-amz-request-id", ""),
                ended.retries,
                ended.error,
            )
            for call, ended in zip(calls, self._run(calls, credentials), strict=True)
        ]

    def get_objects(
        self, objects: Sequence[tuple[str, str]], credentials: Credentials
    ) -> list[GetOutcome]:
        """Read every object, (bucket, key) each, as `put_objects` puts them: all at once,
        with retries, each outcome its own. For objects of a size known to be small (no
        limit is checked before a body is read)."""
        calls = [_Call("GetObject", bucket, key) for bucket, key in objects]
        return [
            GetOutcome(
                call.bucket,
                call.key,
                ended.host,
                ended.started_ns,
                ended.ended_ns,
                ended.answer.status,
                ended.answer.headers.get("x-amz-request-id", ""),
                ended.retries,
                ended.error,
                b"" if ended.error else ended.answer.body,
            )
            for call, ended in zip(calls, self._run(calls, credentials), strict=True)
        ]

    def _run(self, calls: Sequence[_Call], credentials: Credentials) -> list[_Ended]:
        """Every call, all at once, each with retries: how each ended, in the same order."""
        started = time.time_ns()
        ended: dict[int, _Ended] = {}
        answered: dict[int, _Attempt] = {}  # each one's last answer: status, request id
        pending = list(range(len(calls)))
        retries = 0
        while True:
            attempts = self._attempt([calls[index] for index in pending], credentials)
            for index, attempt in zip(pending, attempts, strict=True):
                if attempt.status:
                    answered[index] = attempt
                error = attempt.error
                if (
                    error is None
                    or retries + 1 >= self.settings.max_attempts
                    or not worth_retrying(error)
                ):
                    ended[index] = self._ended(
                        calls[index], answered.get(index, _NO_ANSWER), error, started, retries
                    )
            pending = [index for index in pending if index not in ended]
            if not pending:
                return [ended[index] for index in range(len(calls))]
            time.sleep(backoff(retries))
            retries += 1

    def close(self) -> None:
        """Close this thread's connections."""
        for place in list(self._connections()):
            self._drop(place)

    def close_all(self) -> None:
        """Close every thread's connections; only once no thread puts any more (its threads
        have ended, say)."""
        with self._open_lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()

    def _ended(
        self,
        call: _Call,
        answer: _Attempt,
        error: Exception | None,
        started: int,
        retries: int,
    ) -> _Ended:
        endpoint = self.settings.endpoint
        host, path = endpoint.address(call.bucket, call.key)
        if error is not None:
            error = _as_botocore(error, f"{endpoint.scheme}://{host}{path}")
        return _Ended(answer, error, retries, host, started, time.time_ns())

    def _attempt(self, calls: Sequence[_Call], credentials: Credentials) -> list[_Attempt]:
        """One attempt at each call: every request sent, the n-th on this thread's n-th
        connection to its host, then every answer read."""
        requests = [self._signed(call, credentials) for call in calls]
        attempts: dict[int, _Attempt] = {}
        reused: dict[int, bool] = {}  # slot → its request went on a connection open before
        for slot, request in enumerate(requests):
            try:
                reused[slot] = self._send((request.host, slot), request)
            except _FAILED as exc:
                self._drop((request.host, slot))
                attempts[slot] = _Attempt(error=exc)
        for slot, was_open in reused.items():
            request = requests[slot]
            place = (request.host, slot)
            try:
                reply = self._answer(place, was_open, request)
            except _FAILED as exc:
                self._drop(place)
                attempts[slot] = _Attempt(error=exc)
                continue
            if reply.will_close:
                self._drop(place)
            error = None
            if reply.status >= 300:
                error = client_error(calls[slot].operation, reply.status, reply.body, reply.headers)
            attempts[slot] = _Attempt(reply.status, reply.headers, error, reply.body)
        return [attempts[slot] for slot in range(len(calls))]

    def _signed(self, call: _Call, credentials: Credentials) -> _Request:
        """The call's request, signed now."""
        host, path = self.settings.endpoint.address(call.bucket, call.key)
        signed = sign(
            call.method,
            host,
            path,
            call.headers,
            call.body,
            credentials=credentials,
            region=self.settings.endpoint.region,
            now=datetime.now(UTC),
        )
        signed["host"] = host
        return _Request(call.method, host, path, signed, call.body)

    def _send(self, place: _Place, request: _Request) -> bool:
        """Send the request on connection ``place``; whether that connection was open before."""
        connection, reused = self._connection(place)
        try:
            connection.send(request.method, request.path, request.headers, request.body)
        except _STALE:
            if not reused:
                raise
            self._resend(place, request)
            return False
        return reused

    def _answer(self, place: _Place, reused: bool, request: _Request) -> Reply:
        connection, _ = self._connection(place)
        try:
            return connection.answer(request.method)
        except _STALE:
            if not reused:
                raise
            self._resend(place, request)
            return self._connection(place)[0].answer(request.method)

    def _resend(self, place: _Place, request: _Request) -> None:
        """The request again at once on a new connection, as urllib3 does: the kept-alive one
        was closed by the server meanwhile, before any byte of an answer (no attempt spent)."""
        self._drop(place)
        connection, _ = self._connection(place)
        connection.send(request.method, request.path, request.headers, request.body)

    def _connections(self) -> dict[_Place, Http1Connection]:
        connections: dict[_Place, Http1Connection] | None = getattr(
            self._local, "connections", None
        )
        if connections is None:
            connections = self._local.connections = {}
        return connections

    def _connection(self, place: _Place) -> tuple[Http1Connection, bool]:
        """This thread's connection ``place`` (host and slot) and whether it was open already."""
        connections = self._connections()
        if (connection := connections.get(place)) is not None:
            return connection, True
        settings = self.settings
        host = place[0]
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
        connections[place] = connection
        with self._open_lock:
            self._open.add(connection)
        return connection, False

    def _drop(self, place: _Place) -> None:
        connection = self._connections().pop(place, None)
        if connection is not None:
            with self._open_lock:
                self._open.discard(connection)
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
