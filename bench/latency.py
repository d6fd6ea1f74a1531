"""A loopback TCP proxy that adds a fixed one-way delay to every request (for the benchmarks).

Each chunk the client sends reaches the server `delay` seconds later, in order; chunks are
not serialised behind each other's delays, so a large body costs the delay once, like a
request crossing a network with that latency. Replies pass straight through.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, chunk))
    except ConnectionError:
        pass  # the other end went away: the connection ends like a real one would
    finally:
        queue.put_nowait((0.0, b""))
        with contextlib.suppress(ConnectionError):
            await sender
        writer.close()


@contextmanager
def delay_proxy(target: str, delay: float) -> Iterator[str]:
    """``http://127.0.0.1:<port>`` forwarding to ``target`` (http://host:port), delayed."""
    host, _, port = target.removeprefix("http://").partition(":")
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def handle(client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            server_reader, server = await asyncio.open_connection(host, int(port))
        except OSError:
            client.close()
            return
        await asyncio.gather(_pipe(client_reader, server, delay), _pipe(server_reader, client, 0.0))

    servers: list[asyncio.Server] = []

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()  # until close() below
        # Connections still open end with the proxy, here on their loop: left pending, their
        # pipes would be collected after the loop had gone, an error nobody can catch.
        pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{servers[0].sockets[0].getsockname()[1]}"
    finally:
        loop.call_soon_threadsafe(servers[0].close)
        thread.join(5)
        if not thread.is_alive():
            loop.close()
