"""The render worker process: what runs on the other side of a pool's socket (see pool.py).

Spawned, it sets itself up (dies with its parent, libvips configured with its caches off,
malloc keeping freed surfaces for the next render, its nice level, its RLIMIT_DATA), says
ready, then renders requests in order until its socket ends, reporting its RSS with each
result and trimming malloc's free memory when it grew.

A request may come with a `StoreOrder`: the worker then says "rendered" as soon as the render
is done (which ends the render's timer: an S3 outage never reads as a slow render), hands the
renditions to its store threads, and renders the next request meanwhile; the result follows
once every rendition is put, with each one's `PutOutcome` and without its bytes.
Also the two halves of the socket protocol, and the /proc readers the pool samples.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import pickle
import re
import resource
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import pyvips
from ingest_common.s3_put_blocking import BlockingPutter, ObjectPut, PutOutcome, PutSettings
from ingest_common.s3_request import object_headers
from ingest_common.sigv4 import Credentials

from ingest_processor.render import (
    MIB,
    Only,
    RenderRejected,
    RenderResult,
    RenderSpec,
    configure_vips,
    render_svg,
)
from ingest_processor.renditions import StoreOrder, rendition_key

# A worker trims malloc's free memory once its RSS has grown this much since it last did.
_TRIM_GROWTH = 64 * MIB
# Allocations from this size up get their own mmap (glibc's default: 128 KiB, raised as
# such blocks are freed), and free memory at the heap's top beyond _TRIM_GROWTH goes back.
_MMAP_THRESHOLD = 4 * MIB
# Every message on a worker's socket: its length, then a pickle.
HEADER = struct.Struct("!Q")
# What an allocation failure says: Rust's abort message (librsvg), GLib's g_error, libvips'
# and cairo's error text, errno ENOMEM, Python's MemoryError.
ALLOCATION_FAILED = re.compile(
    r"memory allocation of \d+ bytes failed|failed to allocate|out of memory"
    r"|cannot allocate memory|bad_alloc|MemoryError",
    re.IGNORECASE,
)
# Rendered images a worker may hold while their renditions are put, each by a store thread of
# its own that sends all of them at once (`put_objects`): with 20 ms per request (a region) an
# image's PUTs take about one round trip, and four such cover renders of 5 ms and up. The pool
# sends no render to a worker holding this many, so its memory stays bounded in an S3 outage.
STORING = 4
# Their stacks count against RLIMIT_DATA (glibc's default is 8 MiB each); a PUT needs little.
_STORE_THREAD_STACK = 512 * 1024


@dataclass(frozen=True)
class WorkerLimits:
    soft: int  # bytes of RSS above which a worker retires after its render
    hard: int  # RLIMIT_DATA
    nice: int = 0  # added to the worker's nice level: a slow lane yields the CPU


def worker_main(
    channel: socket.socket,
    stderr: Connection,
    spec: RenderSpec,
    parent: int,
    limits: WorkerLimits,
    puts: PutSettings | None = None,
) -> None:
    """A worker's whole life: set up, say ready, then render requests in order until EOF.
    ``puts``: how to reach S3 for requests that come with a StoreOrder."""
    # First, so that whatever the process writes from here on (an allocator's last words
    # included) reaches the parent.
    os.dup2(stderr.fileno(), 2)
    stderr.close()
    die_with_parent(parent)
    if limits.nice:
        os.nice(limits.nice)
    prepare_render_process()
    # After the imports: they need memory the limit is not about.
    resource.setrlimit(resource.RLIMIT_DATA, (limits.hard, limits.hard))
    trim = _malloc_trim()
    low = _rss()
    sender = _Sender(channel)
    stores = _Stores(sender, puts) if puts is not None else None
    sender.send(("ready", os.getpid(), low))
    while (request := receive_message(channel)) is not None:
        ticket, svg, only, order = request
        kind, value = _render(svg, spec, only)
        del request, svg
        rss = _rss()
        if rss > low + _TRIM_GROWTH:
            trim()
            rss = low = _rss()
        # After an allocation failure the heap may be in pieces and libvips half-way: start
        # afresh rather than find out on the next contributor's image.
        retire = kind == "memory" or rss > limits.soft
        if kind == "ok" and order is not None:
            if stores is None:
                raise RuntimeError("a StoreOrder came to a worker started without PutSettings")
            sender.send((ticket, "rendered", None, rss, retire))
            stores.store(ticket, _as_result(value), order)
        else:
            try:
                sender.send((ticket, kind, value, rss, retire))
            except MemoryError:
                retire = True
                sender.send((ticket, "memory", None, rss, retire))
        del value
        if retire:
            if stores is not None:
                stores.drain()  # the renditions it holds are put and reported first
            # Read no further render (the parent sends what it queued here elsewhere), but keep
            # the socket open until the parent closes it: exiting now could break the socket
            # under a write of the parent's before it has read this result.
            while channel.recv(1 << 16):
                pass
            return
    if stores is not None:
        stores.drain()


def _as_result(value: object) -> RenderResult:
    assert isinstance(value, RenderResult)
    return value


class _Sender:
    """The worker's half of the socket for writing: the render loop and the store threads
    both report on it, a whole message at a time."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        with self._lock:
            send_message(self._channel, message)


class _Stores:
    """The worker's store threads: each takes a render's renditions, puts them all at once, and
    sends its result (renditions without bytes, each with its PutOutcome)."""

    def __init__(self, sender: _Sender, puts: PutSettings) -> None:
        self._sender = sender
        self.s3_objects = BlockingPutter(puts)  # named as Aws's: the IAM scan reads the calls
        threading.stack_size(_STORE_THREAD_STACK)
        self._threads = ThreadPoolExecutor(STORING, thread_name_prefix="store")

    def store(self, ticket: int, result: RenderResult, order: StoreOrder) -> None:
        objects = [
            ObjectPut(
                order.bucket,
                rendition_key(order.image, rendition, order.profile),
                rendition.data,
                object_headers(rendition.content_type, order.cache_control),
            )
            for rendition in result.renditions
        ]
        self._threads.submit(self._put, ticket, result, objects, order.credentials)

    def drain(self) -> None:
        """Wait for every put under way and its report."""
        self._threads.shutdown(wait=True)

    def _put(
        self,
        ticket: int,
        result: RenderResult,
        objects: list[ObjectPut],
        credentials: Credentials,
    ) -> None:
        """On a store thread: whatever happens, the result is sent (a future's exception here
        would reach nobody, and the render would wait for its result until the worker ends)."""
        try:
            outcomes = self.s3_objects.put_objects(objects, credentials)
        except Exception as exc:  # our own code's failure (S3's are outcomes): each one's error
            error = _portable(exc)
            outcomes = [
                PutOutcome(put.bucket, put.key, "", len(put.body), 0, 0, error=error)
                for put in objects
            ]
        stored = tuple(
            replace(rendition, data=b"", stored=outcome)
            for rendition, outcome in zip(result.renditions, outcomes, strict=True)
        )
        # OSError: the parent closed the socket or died, and nobody waits for this result.
        with contextlib.suppress(OSError):
            self._sender.send((ticket, "ok", replace(result, renditions=stored), _rss(), False))


def _render(svg: bytes, spec: RenderSpec, only: Only) -> tuple[str, object]:
    """("ok", result), ("rejected", RenderRejected), ("memory", None) or ("error", exception)."""
    try:
        return "ok", render_svg(svg, spec, only)
    except MemoryError:
        return "memory", None
    except RenderRejected as exc:
        if ALLOCATION_FAILED.search(exc.reason):
            return "memory", None
        return "rejected", exc
    except Exception as exc:
        return "error", _portable(exc)


def _portable(exc: Exception) -> Exception:
    """The exception itself if it survives pickling, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def cap_vips_caches() -> None:
    """Turn libvips' caches off in a worker (configure_vips only bounds them).

    The operation cache keeps images, and an SVG image keeps librsvg's parsed document, which
    the cache's own memory limit does not count: a parse per width of every render stayed, up
    to 100 operations (module docstring). Every render loads new buffers, so no load ever hit.
    """
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)


def _rss() -> int:
    """This process's resident set in bytes (VmRSS), 0 where /proc has no such line."""
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def vm_data(pid: int) -> int:
    """A process's VmData in bytes (what RLIMIT_DATA limits), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def prepare_render_process() -> None:
    """What a process that renders sets up first: libvips (one loader, one thread), its caches
    off, malloc keeping freed surfaces."""
    configure_vips()
    cap_vips_caches()
    keep_freed_memory()


def keep_freed_memory() -> None:
    """Have glibc's malloc reuse freed image surfaces instead of returning them to the kernel.

    librsvg and cairo allocate a surface per filter primitive and per raster, 1 MiB at 512 px,
    and free it within the render. With glibc's defaults each was a fresh mmap and munmap, and
    the kernel zeroed its pages again on first touch: on filter-heavy emoji a third of a
    render's CPU was page faults in the kernel (fluent: 187 → 124 ms of CPU per SVG, openmoji
    −7 %, VmData unchanged). The memory stays the worker's, bounded by the trim below and the
    soft limit. Not glibc (musl): nothing to tune.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        mallopt(_M_TRIM_THRESHOLD, _TRIM_GROWTH)


_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): give the free memory in every malloc arena back to the kernel."""
    libc_trim = _libc_function("malloc_trim")

    def trim() -> None:
        if libc_trim is not None:  # None: not glibc (musl has no arenas to trim)
            libc_trim(0)

    return trim


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, signal_number: int = signal.SIGKILL) -> None:
    """A processor killed with SIGKILL runs no clean-up: have the kernel end its workers
    (or send them ``signal_number``) when it dies.

    Without this, workers of a kill -9'd processor live on as orphans, each holding its
    memory, and a restarted processor adds a new set beside them.
    """
    prctl = _libc_function("prctl") if sys.platform == "linux" else None
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal_number)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _libc_function(name: str) -> Any:
    """A C library function by name, or None where the C library lacks it (musl: mallopt)."""
    libc = _libc()
    return getattr(libc, name, None) if libc is not None else None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Once per process: find_library runs ldconfig (2 ms), and a worker's set-up needs three
    # functions.
    path = ctypes.util.find_library("c")
    return ctypes.CDLL(path, use_errno=True) if path else None


def send_message(channel: socket.socket, message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    # One send, not two: each is a syscall here and a wake-up of the processor's event loop.
    channel.sendall(HEADER.pack(len(payload)) + payload)


def receive_message(channel: socket.socket) -> Any:
    """The next message, or None at the end of the stream (the parent closed it or is gone)."""
    header = _receive_exactly(channel, HEADER.size)
    if header is None:
        return None
    payload = _receive_exactly(channel, HEADER.unpack(header)[0])
    return None if payload is None else pickle.loads(payload)


def _receive_exactly(channel: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        chunk = channel.recv_into(view[got:])
        if not chunk:
            return None
        got += chunk
    return buffer


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used; 0.0 once it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS if fields else 0.0


def minor_faults(pid: int) -> int:
    """Minor page faults a process has taken (pages it touched first); 0 once it is gone."""
    fields = _stat_fields(pid)
    return int(fields[7]) if fields else 0


def _stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat after the command name in parentheses (state is field 3 of proc(5), so
    [0] here); [] once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return []
