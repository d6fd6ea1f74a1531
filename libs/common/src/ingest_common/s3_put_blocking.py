"""PUT of an object from a thread that may block: how render workers store their renditions.

An image's eight rendition PUTs were the largest share of the processor's event loop (signing,
aiohttp, socket writes: 28 % of its samples, `bench/README.md`), and one event loop is one CPU
however many render workers there are. Stored by the worker that rendered them, they scale with
the workers and never cross the worker's socket. The request is `s3_put`'s (`s3_request`): the
same endpoint, SigV4 signature, retries (botocore's standard mode: errors that may pass,
full-jitter backoff) and exceptions (`ClientError` with S3's code, botocore's connection
errors), over keep-alive HTTP/1.1 connections (`http1`): a thread's own, one per host and
request it has in flight, since `put_objects` sends a whole render's renditions at once.

A worker has no tracer: each PUT returns a `PutOutcome` (its timings, status, retries, error)
from which the processor draws the `S3.PutObject` span afterwards, as it draws render spans.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
class _Attempt:
    """What one attempt at a PUT got: an answer (``status`` and its headers), an error, or
    both (S3's refusal)."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    error: Exception | None = None


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
        started = time.time_ns()
        outcomes: dict[int, PutOutcome] = {}
        answered: dict[int, _Attempt] = {}  # each one's last answer: status, request id
        pending = list(range(len(objects)))
        retries = 0
        while True:
            attempts = self._attempt([objects[index] for index in pending], credentials)
            for index, attempt in zip(pending, attempts, strict=True):
                if attempt.status:
                    answered[index] = attempt
                error = attempt.error
                if (
                    error is None
                    or retries + 1 >= self.settings.max_attempts
                    or not worth_retrying(error)
                ):
                    outcomes[index] = self._outcome(
                        objects[index], answered.get(index, _NO_ANSWER), error, started, retries
                    )
            pending = [index for index in pending if index not in outcomes]
            if not pending:
                return [outcomes[index] for index in range(len(objects))]
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

    def _outcome(
        self,
        put: ObjectPut,
        answer: _Attempt,
        error: Exception | None,
        started: int,
        retries: int,
    ) -> PutOutcome:
        endpoint = self.settings.endpoint
        host, path = endpoint.address(put.bucket, put.key)
        return PutOutcome(
            put.bucket,
            put.key,
            host,
            len(put.body),
            started,
            time.time_ns(),
            answer.status,
            "" if error else answer.headers.get("etag", "").strip('"'),
            answer.headers.get("x-amz-request-id", ""),
            retries,
            None if error is None else _as_botocore(error, f"{endpoint.scheme}://{host}{path}"),
        )

    def _attempt(self, objects: Sequence[ObjectPut], credentials: Credentials) -> list[_Attempt]:
        """One attempt at each object: every request sent, the n-th on this thread's n-th
        connection to its host, then every answer read."""
        requests = [self._signed(put, credentials) for put in objects]
        attempts: dict[int, _Attempt] = {}
        reused: dict[int, bool] = {}  # slot → its request went on a connection open before
        for slot, ((host, path, headers), put) in enumerate(zip(requests, objects, strict=True)):
            try:
                reused[slot] = self._send((host, slot), path, headers, put.body)
            except _FAILED as exc:
                self._drop((host, slot))
                attempts[slot] = _Attempt(error=exc)
        for slot, was_open in reused.items():
            host, path, headers = requests[slot]
            place = (host, slot)
            try:
                reply = self._answer(place, was_open, path, headers, objects[slot].body)
            except _FAILED as exc:
                self._drop(place)
                attempts[slot] = _Attempt(error=exc)
                continue
            if reply.will_close:
                self._drop(place)
            error = None
            if reply.status >= 300:
                error = client_error("PutObject", reply.status, reply.body, reply.headers)
            attempts[slot] = _Attempt(reply.status, reply.headers, error)
        return [attempts[slot] for slot in range(len(objects))]

    def _signed(self, put: ObjectPut, credentials: Credentials) -> tuple[str, str, dict[str, str]]:
        """(host, path, headers) of the object's request, signed now."""
        host, path = self.settings.endpoint.address(put.bucket, put.key)
        signed = sign(
            "PUT",
            host,
            path,
            put.headers,
            put.body,
            credentials=credentials,
            region=self.settings.endpoint.region,
            now=datetime.now(UTC),
        )
        signed["host"] = host
        return host, path, signed

    def _send(self, place: _Place, path: str, headers: dict[str, str], body: bytes) -> bool:
        """Send the request on connection ``place``; whether that connection was open before."""
        connection, reused = self._connection(place)
        try:
            connection.send("PUT", path, headers, body)
        except _STALE:
            if not reused:
                raise
            self._resend(place, path, headers, body)
            return False
        return reused

    def _answer(
        self, place: _Place, reused: bool, path: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        connection, _ = self._connection(place)
        try:
            return connection.answer("PUT")
        except _STALE:
            if not reused:
                raise
            self._resend(place, path, headers, body)
            return self._connection(place)[0].answer("PUT")

    def _resend(self, place: _Place, path: str, headers: dict[str, str], body: bytes) -> None:
        """The request again at once on a new connection, as urllib3 does: the kept-alive one
        was closed by the server meanwhile, before any byte of an answer (no attempt spent)."""
        self._drop(place)
        connection, _ = self._connection(place)
        connection.send("PUT", path, headers, body)

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
