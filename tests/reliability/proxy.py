"""A TCP proxy, in a thread of its own, that a test can refuse or black-hole at any moment.

It only pipes bytes, so it stands in front of PostgreSQL and an HTTP endpoint alike. Its
event loop is its own: a test whose loop is busy, blocked or synchronous never stalls it,
and every mode switch returns once the mode is in effect.

- `up()`: forward everything.
- `refuse()`: new connections are refused (ECONNREFUSED) and open ones are reset, as when
  the server or its host is down.
- `blackhole()`: connections are accepted but nothing passes either way and nothing is
  closed, as in a network partition: clients wait until their own timeouts. Going `up()`
  again resets the connections that were held, since a real partition breaks them too.

Limit: while black-holed, this host's kernel still acknowledges what a client sends and
answers its TCP keepalive probes, so only application timeouts (not keepalive) notice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

SWITCH_TIMEOUT = 10.0  # a mode switch is a few callbacks on an idle loop: seconds mean a bug


class Mode(enum.Enum):
    UP = "up"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"


@dataclasses.dataclass(frozen=True)
class Counters:
    accepted: int = 0
    open: int = 0
    bytes_to_target: int = 0
    bytes_to_client: int = 0


class FaultProxy:
    """A proxy on 127.0.0.1 in front of `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._requested_port = port
        self._port: int | None = None
        self._mode = Mode.UP
        # Holds the port while refusing: bound but not listening, so connects are refused
        # and no other socket can take the port before the proxy listens on it again.
        self._placeholder: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._accepted = 0
        self._bytes_to_target = 0
        self._bytes_to_client = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dsn(self, dsn: str) -> str:
        """`dsn` (a postgresql:// URL) with its host and port replaced by the proxy's."""
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgres", "postgresql") or not parts.netloc:
            raise ValueError(f"not a postgresql:// URL: {dsn!r}")
        user, at, _ = parts.netloc.rpartition("@")
        return parts._replace(netloc=f"{user}{at}127.0.0.1:{self.port}").geturl()

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._placeholder = _bound_socket(self._requested_port)
        self._port = int(self._placeholder.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"fault-proxy-{self._port}", daemon=True
        )
        self._thread.start()
        self._mode = Mode.REFUSE  # nothing listens yet
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Reset every connection, stop listening and end the thread. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(SWITCH_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
            self._thread = None
            if self._placeholder is not None:
                self._placeholder.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- modes --------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def up(self) -> None:
        """Forward everything; connections held by a black hole are reset first."""
        self._run(self._switch(Mode.UP))

    def refuse(self) -> None:
        """Refuse new connections (on the same port) and reset the open ones."""
        self._run(self._switch(Mode.REFUSE))

    def blackhole(self) -> None:
        """Accept connections but pass nothing either way, and close nothing."""
        self._run(self._switch(Mode.BLACKHOLE))

    @property
    def counters(self) -> Counters:
        return Counters(
            accepted=self._accepted,
            open=len(self._connections),
            bytes_to_target=self._bytes_to_target,
            bytes_to_client=self._bytes_to_client,
        )

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._loop is None or self._thread is None:
            coroutine.close()
            raise RuntimeError("the proxy is not started")
        if threading.get_ident() == self._thread.ident:
            coroutine.close()
            raise RuntimeError("switch the proxy from another thread than its own")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(SWITCH_TIMEOUT)

    async def _shutdown(self) -> None:
        await self._switch(Mode.REFUSE)
        # Connects to the target that were cancelled must unwind before the loop stops.
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        if pending:
            await asyncio.wait(pending, timeout=SWITCH_TIMEOUT / 2)

    async def _switch(self, mode: Mode) -> None:
        previous, self._mode = self._mode, mode
        if mode is previous:
            return
        if mode is Mode.BLACKHOLE:
            for connection in self._connections:
                connection.hold()
        else:
            # Into REFUSE every connection goes; into UP only held ones exist (from BLACKHOLE).
            for connection in list(self._connections):
                connection.abort()
        if mode is Mode.REFUSE:
            if self._server is not None:
                self._server.close()  # closes the listening socket at once
                self._server = None
        elif self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: _End(self, None), sock=_bound_socket(self.port)
            )
        # Let the aborts' callbacks run, so their sockets are closed before we return.
        await asyncio.sleep(0)

    # --- connections (on the proxy's loop) ----------------------------------------------

    def _accepted_client(self, client: _End) -> None:
        self._accepted += 1
        connection = _Connection(self, client)
        self._connections.add(connection)
        if self._mode is Mode.REFUSE:
            connection.abort()  # accepted by the kernel just before the listener closed
        elif self._mode is Mode.BLACKHOLE:
            connection.hold()
        else:
            connection.connect()

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)


def _bound_socket(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:`port` that others with the same options may share."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


class _Connection:
    """A client connection and, once connected, its connection to the target."""

    def __init__(self, proxy: FaultProxy, client: _End) -> None:
        self.proxy = proxy
        self.client = client
        self.target: _End | None = None
        self.held = False
        self.closed = False
        self._connecting: asyncio.Task[None] | None = None
        client.connection = self

    def connect(self) -> None:
        # Nothing is read from the client until the target is there to take it.
        self.client.pause()
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, target = await loop.create_connection(
                lambda: _End(self.proxy, self), *self.proxy.target
            )
        except OSError:
            self.abort()  # the target is down: the client sees a reset
            return
        self.target = target
        self.client.peer, target.peer = target, self.client
        self.client.resume()

    def hold(self) -> None:
        """Stop both directions; what arrives stays in the kernel's buffers."""
        self.held = True
        if self._connecting is not None:
            self._connecting.cancel()
        for end in self._ends():
            end.pause()

    def abort(self) -> None:
        """Reset both sides."""
        if self._connecting is not None:
            self._connecting.cancel()
        for end in self._ends():
            end.abort()
        self._done()

    def lost(self, end: _End, exc: Exception | None) -> None:
        if self.held:
            return  # a partition passes on no close either: up() or refuse() resets the rest
        peer = end.peer
        if peer is None:
            self.abort()
        elif exc is not None:
            peer.abort()  # a reset stays a reset
        else:
            peer.close()  # a clean close, after what is buffered for the peer
        if self._connecting is not None:
            self._connecting.cancel()
        if all(e.gone for e in self._ends()):
            self._done()

    def _ends(self) -> list[_End]:
        return [self.client] if self.target is None else [self.client, self.target]

    def _done(self) -> None:
        if not self.closed:
            self.closed = True
            self.proxy._forget(self)


class _End(asyncio.Protocol):
    """One socket of a proxied connection: what it receives goes to its peer."""

    def __init__(self, proxy: FaultProxy, connection: _Connection | None) -> None:
        self.proxy = proxy
        self.connection = connection  # None for a client until it is accepted
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.gone = False
        self.eof = False  # this side has closed its half of the stream
        self._paused = False  # by flow control or a hold
        self._peer_full = False  # the peer's write buffer is over its high-water mark

    @property
    def is_client(self) -> bool:
        return self.connection is None or self.connection.client is self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.connection is None:
            self.proxy._accepted_client(self)

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or connection.held or self.peer is None or self.peer.gone:
            return  # black-holed, or reset by now: dropped
        assert self.peer.transport is not None
        if self.is_client:
            self.proxy._bytes_to_target += len(data)
        else:
            self.proxy._bytes_to_client += len(data)
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        connection, peer = self.connection, self.peer
        if connection is None or connection.held or peer is None or peer.gone:
            return True  # black-holed: a FIN passes no more than data does
        assert peer.transport is not None
        if peer.eof or not peer.transport.can_write_eof():
            return False  # both halves are closed: close both sockets
        peer.transport.write_eof()  # a half-close passes as one
        return True  # keep our side open: the peer may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if self.connection is not None:
            self.connection.lost(self, exc)

    # Flow control: the peer's write buffer is full, so stop reading from this side.
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer._peer_full = True
            self.peer._set_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer._peer_full = False
            self.peer._set_reading()

    def pause(self) -> None:
        self._paused = True
        self._set_reading()

    def resume(self) -> None:
        self._paused = False
        self._set_reading()

    def _set_reading(self) -> None:
        if self.transport is None or self.gone or self.transport.is_closing():
            return
        held = self.connection is not None and self.connection.held
        should_read = not (self._paused or self._peer_full or held)
        if should_read and not self.transport.is_reading():
            self.transport.resume_reading()
        elif not should_read and self.transport.is_reading():
            self.transport.pause_reading()

    def abort(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.close()
