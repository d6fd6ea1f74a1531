"""The render workers' HTTP/1.1 connection (ingest_common.http1) against scripted servers on
loopback: each test's server reads what the client sent and answers bytes it chose, so every
framing an answer may use, and every way a server may fail, is exercised on a real socket."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from ingest_common.http1 import Http1Connection

Handler = Callable[[socket.socket], None]
OK = b'HTTP/1.1 200 OK\r\nETag: "e1"\r\nContent-Length: 0\r\n\r\n'


@contextmanager
def server(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A loopback server that runs ``handler`` on each connection it accepts; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            try:
                if tls is not None:
                    connection = tls.wrap_socket(connection, server_side=True)
                with connection:
                    handler(connection)
            except OSError:  # a client that hung up or refused the handshake: the next one
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        listener.close()
        for connection in accepted:  # ends a handler waiting for a client that is done
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        thread.join(5)
        assert not thread.is_alive()


def read_request(connection: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one request, by its Content-Length (none: no body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head, body


def answering(
    *answers: bytes, then_close: bool = False
) -> tuple[Handler, list[tuple[bytes, bytes]]]:
    """A handler that answers each request in turn with the next of ``answers``; and the
    requests it received."""
    received: list[tuple[bytes, bytes]] = []

    def handle(connection: socket.socket) -> None:
        for answer in answers:
            received.append(read_request(connection))
            connection.sendall(answer)
        if not then_close:
            connection.recv(1)  # hold the connection until the client closes it

    return handle, received


def connect(port: int, **options: object) -> Http1Connection:
    settings: dict[str, object] = {"tls": None, "connect_timeout": 5.0, "read_timeout": 5.0}
    settings.update(options)
    return Http1Connection("127.0.0.1", port, **settings)  # type: ignore[arg-type]


def test_a_request_is_sent_whole_and_the_connection_kept_for_the_next() -> None:
    handle, received = answering(OK, b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello")
    with server(handle) as port:
        connection = connect(port)
        first = connection.request(
            "PUT", "/b/k%20x", {"host": "h:1", "content-type": "a/b"}, b"xyz"
        )
        second = connection.request("PUT", "/b/k2", {"host": "h:1"}, b"")
        connection.close()
    assert (first.status, first.headers["etag"], first.body, first.will_close) == (
        200, '"e1"', b"", False,
    )  # fmt: skip
    assert (second.status, second.body, second.will_close) == (201, b"hello", False)
    head, body = received[0]
    assert head.split(b"\r\n") == [
        b"PUT /b/k%20x HTTP/1.1", b"host: h:1", b"content-type: a/b", b"content-length: 3",
    ]  # fmt: skip
    assert body == b"xyz"
    assert received[1][1] == b""


def test_a_get_says_no_length_and_its_answers_body_is_read() -> None:
    handle, received = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n\x89PNG", OK)
    with server(handle) as port:
        connection = connect(port)
        got = connection.request("GET", "/b/tile.png", {"host": "h:1"}, b"")
        put = connection.request("PUT", "/b/empty", {"host": "h:1"}, b"")
        connection.close()
    assert (got.status, got.body) == (200, b"\x89PNG")
    assert put.status == 200
    # RFC 9110 8.6: no Content-Length on a request without content whose method expects none;
    # an empty PUT still says 0: S3 refuses a PUT without a length (411 Length Required).
    assert received[0][0].split(b"\r\n") == [b"GET /b/tile.png HTTP/1.1", b"host: h:1"]
    assert received[1][0].split(b"\r\n")[-1] == b"content-length: 0"


def test_a_chunked_answer_is_joined_and_its_trailers_skipped() -> None:
    chunked = (
        b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6;ext=1\r\n<Code>\r\n0E\r\nAccessDenied</\r\n5\r\nCode>\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    handle, _ = answering(chunked, OK)
    with server(handle) as port:
        connection = connect(port)
        reply = connection.request("PUT", "/k", {}, b"x")
        after = connection.request("PUT", "/k", {}, b"x")  # the stream is where it should be
        connection.close()
    assert (reply.status, reply.body, reply.will_close) == (
        403,
        b"<Code>AccessDenied</Code>",
        False,
    )
    assert after.status == 200


def test_an_answer_without_a_length_is_read_to_the_end_and_closes_the_connection() -> None:
    handle, _ = answering(b"HTTP/1.1 500 Oops\r\n\r\nno length here", then_close=True)
    with server(handle) as port:
        reply = connect(port).request("PUT", "/k", {}, b"x")
    assert (reply.status, reply.body, reply.will_close) == (500, b"no length here", True)


def test_interim_answers_are_skipped() -> None:
    handle, _ = answering(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    with server(handle) as port:
        assert connect(port).request("PUT", "/k", {}, b"x").status == 200


@pytest.mark.parametrize(
    ("answer", "will_close"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    ],
)
def test_whether_the_server_keeps_the_connection(answer: bytes, will_close: bool) -> None:
    handle, _ = answering(answer)
    with server(handle) as port:
        assert connect(port).request("PUT", "/k", {}, b"x").will_close is will_close


def test_a_kept_connection_the_server_closed_fails_as_http_client_says_so() -> None:
    handle, _ = answering(OK, then_close=True)
    with server(handle) as port:
        connection = connect(port)
        assert connection.request("PUT", "/k", {}, b"x").status == 200
        time.sleep(0.1)  # the server has closed its end
        with pytest.raises((http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
            connection.request("PUT", "/k", {}, b"x")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, http.client.LineTooLong),
    ],
)
def test_a_malformed_answer_is_an_http_client_error(answer: bytes, error: type[Exception]) -> None:
    handle, _ = answering(answer, then_close=True)
    with server(handle) as port, pytest.raises(error):
        connect(port).request("PUT", "/k", {}, b"x")


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent() -> None:
    handle, received = answering(OK)
    with server(handle) as port:
        connection = connect(port)
        with pytest.raises(ValueError, match="line break"):
            connection.request("PUT", "/k", {"x-amz-meta-a": "1\r\nx-evil: 1"}, b"x")
        assert connection.request("PUT", "/k", {}, b"x").status == 200
    assert len(received) == 1


def test_a_silent_server_times_out_on_the_read_timeout() -> None:
    def silent(connection: socket.socket) -> None:
        read_request(connection)
        connection.recv(1)

    with server(silent) as port:
        connection = connect(port, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.request("PUT", "/k", {}, b"x")
        assert time.monotonic() - started < 3


def test_a_large_body_reaches_a_slow_reader_whole() -> None:
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than a socket buffer takes at once
    got: list[bytes] = []

    def slow(connection: socket.socket) -> None:
        time.sleep(0.3)  # the client's first sendmsg fills the buffers and writes a part only
        got.append(read_request(connection)[1])
        connection.sendall(OK)
        connection.recv(1)

    with server(slow) as port:
        assert connect(port).request("PUT", "/k", {}, body).status == 200
    assert got == [body]


def test_over_tls(tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(certificate, key)
    trusting = ssl.create_default_context(cafile=str(certificate))
    handle, received = answering(OK, OK)
    with server(handle, tls=serving) as port:
        connection = Http1Connection(
            "localhost", port, tls=trusting, connect_timeout=5, read_timeout=5
        )
        assert connection.request("PUT", "/k", {}, b"a" * 100_000).status == 200
        assert connection.request("PUT", "/k", {}, b"b").status == 200
        connection.close()
    assert [body for _, body in received] == [b"a" * 100_000, b"b"]


def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(certificate, key)
    trusting = ssl.create_default_context(cafile=str(certificate))
    handle, received = answering(OK)
    with server(handle, tls=serving) as port, pytest.raises(ssl.SSLCertVerificationError):
        # The certificate names localhost, not 127.0.0.1.
        Http1Connection("127.0.0.1", port, tls=trusting, connect_timeout=5, read_timeout=5)
    assert received == []


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost, signed by its own key (cryptography comes with moto)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "cert.pem", directory / "key.pem"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path
