"""One blocking HTTP/1.1 keep-alive connection, for the render workers' PUTs (`s3_put_blocking`).

From eight threads against a loopback S3, http.client spends about 0.32 ms of CPU per small
PUT, this about 0.23 (`bench/put.py`): http.client validates each header with a regular
expression, writes the head and the body in two system calls, and parses the answer's head
with the email package.
Here a request is one write and an answer's head one `bytes.split`. What S3 answers a PUT is
small and simple; still, every framing HTTP/1.1 allows an answer is read: Content-Length,
chunked, or to the end of the connection, with interim 1xx answers skipped.

Errors are http.client's and the socket's, so callers handle them as before: a kept-alive
connection the server closed meanwhile fails with `RemoteDisconnected` (or a reset or broken
pipe) before any byte of an answer; a malformed answer with an `HTTPException`; a silent server
with the socket's timeout.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024  # bytes of an answer's status line and headers, as http.client's limits
_CHUNK = 64 * 1024
_NO_BODY = frozenset({204, 304})
_BODY_METHODS = frozenset({"PUT", "POST", "PATCH"})  # an empty body still says its length


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's last value
    body: bytes
    will_close: bool  # the server ends the connection after this answer


class Http1Connection:
    """``Http1Connection(host, port, tls=..., connect_timeout=..., read_timeout=...)``, then
    `request` as often as the server keeps the connection, then `close`. One thread at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        """Connect (OSError if that fails), over TLS with ``tls`` (None: plain TCP): the
        connect timeout for the handshake, then the read timeout for every read of an answer
        (as botocore's two timeouts)."""
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(read_timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._tls = tls is not None
        self._buffer = b""  # bytes read past the last answer (none, from a well-behaved server)

    def request(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Send one request with ``body`` (Content-Length is added, but not to a GET or HEAD
        without one) and read its answer."""
        self.send(method, target, headers, body)
        return self.answer(method)

    def send(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> None:
        """Send one request with ``body`` (Content-Length as `request` adds it); `answer` reads
        its answer, so a caller can have requests on several connections in flight at once."""
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} holds a line break")
            lines.append(f"{name}: {value}")
        if body or method in _BODY_METHODS:  # none on a GET: RFC 9110 8.6
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._tls:  # an SSL socket has no sendmsg; one record of both is fine
            self._sock.sendall(head + body)
        else:
            self._send_both(head, body)

    def close(self) -> None:
        self._sock.close()

    def _send_both(self, head: bytes, body: bytes) -> None:
        """Head and body in one system call (usually), without copying the body."""
        parts = [memoryview(head), memoryview(body)]
        while parts:
            sent = self._sock.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts[0])
                parts.pop(0)
            if parts and sent:
                parts[0] = parts[0][sent:]

    def answer(self, method: str) -> Reply:
        """The answer to the request `send` sent (``method``: a HEAD's answer has no body)."""
        while True:
            status, version, headers = self._head()
            if not 100 <= status < 200:
                break  # 1xx (100 Continue, 103 Early Hints): the real answer follows
        tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
        # HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes it unless told.
        will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        if method == "HEAD" or status in _NO_BODY:
            return Reply(status, headers, b"", will_close)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif (length := headers.get("content-length")) is not None:
            if not length.isdigit():
                raise http.client.HTTPException(f"invalid Content-Length {length!r}")
            body = self._exactly(int(length))
        else:
            body, will_close = self._to_end(), True
        return Reply(status, headers, body, will_close)

    def _head(self) -> tuple[int, str, dict[str, str]]:
        while (end := self._buffer.find(_HEAD_END)) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise http.client.LineTooLong("the answer's head")
            chunk = self._sock.recv(_CHUNK)
            if not chunk:
                if self._buffer:
                    raise http.client.IncompleteRead(self._buffer)
                raise http.client.RemoteDisconnected(
                    "Remote end closed connection without response"
                )
            self._buffer += chunk
        head, self._buffer = self._buffer[:end], self._buffer[end + len(_HEAD_END) :]
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise http.client.BadStatusLine(status_line)
        headers: dict[str, str] = {}
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise http.client.HTTPException(f"malformed header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        return int(code), version, headers

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._sock.recv(max(_CHUNK, size - len(self._buffer)))
            if not chunk:
                raise http.client.IncompleteRead(self._buffer, size - len(self._buffer))
            self._buffer += chunk
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body

    def _line(self) -> bytes:
        while (end := self._buffer.find(_CRLF)) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise http.client.LineTooLong("a chunk's size line")
            chunk = self._sock.recv(_CHUNK)
            if not chunk:
                raise http.client.IncompleteRead(self._buffer)
            self._buffer += chunk
        line, self._buffer = self._buffer[:end], self._buffer[end + len(_CRLF) :]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.HTTPException(f"invalid chunk size {size_text!r}") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._exactly(size))
            if self._exactly(len(_CRLF)) != _CRLF:
                raise http.client.HTTPException("a chunk does not end with CRLF")

    def _to_end(self) -> bytes:
        parts = [self._buffer]
        self._buffer = b""
        while chunk := self._sock.recv(_CHUNK):
            parts.append(chunk)
        return b"".join(parts)
