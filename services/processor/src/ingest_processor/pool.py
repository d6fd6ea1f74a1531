"""An asyncio front to render processes of our own, so one processor uses all its CPUs safely.

Why processes: pyvips releases the GIL but takes it back on every call, so threads scale about
1.4x on two cores where processes scale about 1.9x (DESIGN.md).

Why our own processes and not ``ProcessPoolExecutor``: the executor cannot stop one task, so a
render timeout had to kill every worker of the pool, and its other renders died as bystanders;
and it hides which worker ran what, so it cannot recycle the one worker that grew. Here each
worker is a ``spawn`` process with a socket of its own, read and written by asyncio streams
(never blocking the event loop), and the pool knows at every moment which renders each worker
holds, in order.

* **Depth 2.** Each worker holds at most two renders: the one it runs and the next, already in
  its socket, so it never idles for the round trip through the parent (result back, next SVG
  out). With one render per worker the workers idled about 10% of the time on two busy cores;
  ``bench/render.py`` measures the pool against a raw loop. Renders beyond that wait in the
  pool's own queue and go to the least busy ready worker.
* **The timeout counts rendering only.** A worker renders strictly in order, so a render starts
  when it reaches an idle worker, or when the result of the render before it arrives. Its
  timer (``loop.call_later``) runs from there; waiting behind another render never counts. (The
  parent sees a result a moment after the worker sent it, so the clock errs by that moment in
  the render's favour.)
* **A timeout costs only its own image.** The overrunning worker alone is killed; its render
  raises ``RenderTimedOut``, the render queued behind it on that worker goes back to the
  front of the pool's queue (it never started, so it is not a retry), and a successor starts
  at once. Renders on other workers carry on untouched.
* **A crash costs only that worker's renders.** A worker that dies on its own (segfault, the
  kernel's OOM killer, ``kill``) is noticed by the end of its socket; the render it was running
  gets one transparent retry on another worker, one that died under its retry raises
  ``RenderCrashed`` (retryable: the message stays for SQS redelivery, which ends in the DLQ for
  an SVG that kills the renderer every time); the render queued behind it is sent again.
* **Workers store what they render.** A render given a ``StoreOrder`` is put in S3 by its own
  worker's store threads (worker.py): the worker says "rendered" when the render is done, which
  ends its timer and frees its place (the next render starts), and the result follows once
  every PUT has ended, each rendition with its ``PutOutcome`` and without its bytes. So S3's
  latency or an outage never counts as render time, the bytes never cross the socket, and the
  PUTs' CPU scales with the workers instead of queueing on the processor's one event loop. A
  worker holds at most ``STORING`` rendered images (bounded memory when S3 is slow: no more
  renders go to it), retires only after reporting them, and if it dies or is killed for a
  timeout they are rendered again on another worker (not their fault: no attempt counted).
  The store client costs a worker about 6 MB at rest (28 → 34 MB at ready: http.client and
  botocore's exceptions), and its store threads (one per image held) 512 KiB of stack each.
* **Eager start.** Workers start in ``__aenter__`` and successors the moment a worker is
  retired or lost; renders go only to workers that have reported ready (pyvips imported,
  libvips configured), so start-up never counts against a render. A pool whose workers cannot
  start fails in ``__aenter__``; a successor that cannot start is tried again with a backoff,
  and renders left with no worker at all fail with ``RenderCrashed``.

Memory, measured on this 2-core machine with 4.5 MB SVGs of small paths that pass ``svgcheck``
(1000×1000 px canvas): librsvg holds a parsed document, 60–120 bytes per byte of SVG, as long as
the libvips image loaded from it lives. libvips' operation cache kept those images (its memory
cap counts pixel buffers, not librsvg's documents): each render loads the SVG once per width,
and up to 100 operations stay cached across renders. One such SVG took a worker to 870 MB, the
same SVG again to 1656 MB, 300,000 circles to 2.0 then 3.9 GB, and the worker kept it. So, in
each worker:

* **libvips' caches are off** (``cap_vips_caches``). Every render loads a new buffer, so no
  load ever hit (traced over the corpus: the only hits were the encoders' own ``colourspace``
  and ``cast``, which save building a lazy operation, not pixel work); without the cache the
  same SVGs peak at 284 and 555 MB, one document at a time.
* **RSS is reported with every result**, read by the worker from ``/proc/self/status`` (10 µs).
  Freed memory stays in malloc's arenas (284 MB after that render), so once RSS has grown
  ``_TRIM_GROWTH`` past its last low point the worker calls glibc's ``malloc_trim``: 284 → 73
  and 555 → 67 MB, in 10–17 ms. About 0.5 ms even when there is nothing to give back, so not
  after every render. Below that step freed memory is kept on purpose
  (``worker.keep_freed_memory``): the next render reuses it instead of faulting in fresh
  pages, a third of a filter-heavy render's CPU.
* **Soft limit** (``memory_soft_limit``, 384 MiB): a worker still above it after trimming holds
  that memory for real. It sends its result marked as retiring and reads no further render;
  the pool sends what it had queued there elsewhere and starts a successor. Nothing is lost.
  (The worker waits for the parent to close its socket before it exits: exiting at once could
  break the socket under a write of the parent's, and asyncio then drops the unread result.)
* **Count limit** (``max_renders``, 1000): a worker is sent no more renders after that many;
  its successor starts while it finishes the ones it holds. This bounds slow leaks (libvips,
  librsvg, fontconfig) that no single render shows.
* **Hard limit** (``memory_hard_limit``, 768 MiB): ``RLIMIT_DATA``, set in the worker after its
  imports. Not ``RLIMIT_AS``: every thread libvips starts reserves a 64 MiB malloc arena and an
  8 MiB stack in address space, so after 400 ordinary icons a worker at 57 MB RSS had 480 MB of
  address space (7 threads), and an SVG needing 560 MB (300,000 circles) failed an
  address-space limit of 768 MiB that it passes as a data limit. ``RLIMIT_DATA`` counts private
  writable memory (VmData, 116 MB for that worker, thread stacks included), which tracks what a
  render really uses. It matters even with the cache off: 1.1 million ``<g/>`` (4.5 MB; the
  batcher's check refuses it, nothing here before librsvg does) took a worker to 1.29 GB
  before librsvg refused the document for having over a million elements.

  A render that reaches the hard limit ends as ``RenderOverMemory``, a ``RenderRejected``
  ("needs more than 768 MiB of memory to render"): not a crash, not retried. How it meets the
  limit varies with where an allocation fails, so three signs are read: the worker's own
  report (MemoryError, libvips "out of memory"); its last words on stderr, which comes through
  a pipe of its own and is forwarded to the processor's (librsvg is Rust, and Rust aborts on a
  failed allocation: "memory allocation of 1168 bytes failed"; GLib's g_malloc aborts too); and
  the most VmData sampled while it rendered, for the failures that do not say so (a silent
  SIGSEGV in a C library, "Error creating thread" from libvips, "rendering error" from
  librsvg). Between renders every worker is trimmed or retired back under the soft limit, so
  each render has at least ``hard - soft`` of room, and in practice nearly all of it.

With the defaults and two workers, render processes hold at most 2 × 768 MiB plus shared
libraries (README: no worker over 1 GiB) and rest at 60–90 MB each.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import multiprocessing
import os
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any, cast

import structlog
from ingest_common.s3_put_blocking import PutSettings

from ingest_processor.render import (
    MIB,
    Only,
    RenderRejected,
    RenderResult,
    RenderSpec,
)
from ingest_processor.renditions import StoreOrder
from ingest_processor.settings import ProcessorSettings
from ingest_processor.spec import (
    DEFAULT_MAX_RENDERS,
    DEFAULT_MEMORY_HARD_LIMIT,
    DEFAULT_MEMORY_SOFT_LIMIT,
)
from ingest_processor.worker import (
    ALLOCATION_FAILED,
    HEADER,
    STORING,
    WorkerLimits,
    cpu_seconds,
    vm_data,
    worker_main,
)

log = structlog.get_logger("ingest.processor.pool")


# Attempts per render when its worker dies under it: the first plus one transparent retry.
_ATTEMPTS = 2
# Spawning a worker imports pyvips and loads libvips: seconds on a cold, busy container.
_START_TIMEOUT = 60.0
# spawn, not fork: the parent runs asyncio and libvips threads, neither survives fork.
_SPAWN = multiprocessing.get_context("spawn")
# Renders held per worker: one running, one queued behind it.
_DEPTH = 2
# How much of a worker's stderr is kept to tell why it died.
_STDERR_TAIL = 4096
# How long a dead worker's last stderr may take to arrive after its socket closed.
_STDERR_DRAIN = 1.0
# How long a worker told to exit may take before it is killed.
_EXIT_GRACE = 5.0
# Results are read whole; a bigger stream buffer than asyncio's 64 KiB saves pausing the socket
# every 128 KiB of a large one.
_STREAM_LIMIT = 4 * MIB
# Successive failed starts of a successor wait 1, 2, 4 … up to 30 s before the next try.
_RESTART_BACKOFF = (1.0, 30.0)
# Not every allocation failure says so: near the limit a worker also died of SIGSEGV in silence
# (a C library that does not check malloc), or librsvg answered "rendering error", or GLib
# could not create a thread. So the pool samples each busy worker's VmData (what RLIMIT_DATA
# counts) every _WATCH_INTERVAL, and a render that fails after it reached _NEAR_LIMIT of the
# hard limit failed for memory. (librsvg parses at about 200 MB/s: 10 MB per sample.)
_WATCH_INTERVAL = 0.05
_NEAR_LIMIT = 0.75
# With cpu_timeout, a render is still cut after this many times its timeout by the clock:
# a worker stopped, or waiting on something, uses no CPU and would never be timed out.
_CPU_CLOCK_BACKSTOP = 10.0


class RenderCrashed(Exception):
    """The worker process died under this render twice (crash, OOM kill). Retryable."""


class RenderTimedOut(RenderRejected):
    """The render ran longer than its timeout; its worker was replaced. Not retryable."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"took longer than {seconds:g} s to render")
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[RenderTimedOut], tuple[float]]:
        return type(self), (self.seconds,)


class RenderOverMemory(RenderRejected):
    """The render needed more memory than a worker may have. Not retryable."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"needs more than {limit / MIB:g} MiB of memory to render")
        self.limit = limit

    def __reduce__(self) -> tuple[type[RenderOverMemory], tuple[int]]:
        return type(self), (self.limit,)


@dataclass
class PoolStats:
    """Counters for metrics and tests."""

    workers_started: int = 0  # every worker process started, the first ones included
    timeouts: int = 0
    crashes: int = 0  # workers that died on their own (not of the hard limit), or did not start
    retries: int = 0  # renders sent again after their worker died under them
    over_memory_limit: int = 0  # renders that hit the hard limit
    recycled_for_memory: int = 0
    recycled_for_count: int = 0
    # Seconds workers held a render, from the moment it started rendering to its result (or
    # its end otherwise), renders that ended only: RenderPool.busy_seconds adds those under way.
    busy_seconds: float = 0.0
    rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes, last known, live workers


# --- parent side -------------------------------------------------------------------------------


class _State(enum.Enum):
    STARTING = "starting"
    READY = "ready"  # takes renders
    RETIRING = "retiring"  # takes no more renders; leaves when it holds none
    GONE = "gone"  # killed, or exited; its renders were settled or sent elsewhere


@dataclass(eq=False)
class _Job:
    svg: bytes
    only: Only
    timeout: float
    future: asyncio.Future[RenderResult]
    store: StoreOrder | None = None  # its worker stores the renditions (worker.py)
    attempts: int = 0  # how many workers died while running it
    timer: asyncio.TimerHandle | None = None
    cpu_start: float = 0.0  # its worker's CPU seconds when it started (cpu_timeout)
    stats: PoolStats | None = None  # where the time it held its worker is added
    started: float = 0.0  # time.monotonic() when it started rendering; 0.0 while it is not
    on_rendered: Callable[[], None] | None = None  # called once its render is done, if it is

    def stop_timer(self) -> None:
        """It no longer renders (done, failed, or going back to the queue)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.started:
            if self.stats is not None:
                self.stats.busy_seconds += time.monotonic() - self.started
            self.started = 0.0

    def fail(self, error: BaseException) -> None:
        self.stop_timer()
        if not self.future.done():
            self.future.set_exception(error)


class _StderrTail(asyncio.Protocol):
    """A worker's stderr: forwarded to ours as it comes, its last bytes kept for the autopsy."""

    def __init__(self) -> None:
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-_STDERR_TAIL:]
        with contextlib.suppress(OSError):
            os.write(2, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def text(self) -> str:
        return self.tail.decode(errors="replace")


class _StartFailed(Exception):
    pass


class _Worker:
    """One worker process, its socket, and the renders it holds in the order it runs them."""

    def __init__(self) -> None:
        self.state = _State.STARTING
        self.jobs: deque[_Job] = deque()  # jobs[0] is rendering; the rest wait in its socket
        self.storing: dict[int, _Job] = {}  # rendered, renditions being stored; by ticket
        self.sent = 0  # renders sent to it, for max_renders
        self.replaced = False  # its successor has been started
        self.peak_data = 0  # the most VmData sampled during the render it runs (_NEAR_LIMIT)
        self.pid = 0
        self.exitcode: int | None = None
        self.process: SpawnProcess | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.stderr: _StderrTail | None = None
        self.stderr_transport: asyncio.BaseTransport | None = None
        self.task: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def start(self, spec: RenderSpec, limits: WorkerLimits, puts: PutSettings | None) -> int:
        """Spawn the process and wait for its "ready"; its RSS then. Raises _StartFailed."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        stderr_ours, stderr_theirs = _SPAWN.Pipe(duplex=False)
        try:
            self.process = _SPAWN.Process(
                target=worker_main,
                args=(theirs, stderr_theirs, spec, os.getpid(), limits, puts),
                name="render-worker",
                daemon=True,
            )
            # A thread: spawning forks and execs, and writes the pickled arguments to a pipe.
            await asyncio.to_thread(self.process.start)
            self.pid = self.process.pid or 0
            if self.state is _State.GONE:  # the pool closed while it spawned: no need to wait
                self.kill()
                raise _StartFailed("stopped while starting")
            self.stderr_transport, self.stderr = await loop.connect_read_pipe(
                _StderrTail, stderr_ours
            )
            self.reader, self.writer = await asyncio.open_unix_connection(
                sock=ours, limit=_STREAM_LIMIT
            )
        except BaseException:
            if self.stderr_transport is None:  # else reap closes it
                stderr_ours.close()
            if self.writer is None:
                ours.close()
            raise
        finally:
            theirs.close()
            stderr_theirs.close()
        try:
            hello = await asyncio.wait_for(self.receive(), _START_TIMEOUT)
        except TimeoutError:
            raise _StartFailed(f"not ready after {_START_TIMEOUT:g} s") from None
        except (OSError, EOFError, pickle.UnpicklingError):
            hello = None
        if hello is None:
            await self.stderr_drained()
            last_words = self.stderr_text()[-500:].strip() or "nothing on stderr"
            raise _StartFailed(f"a worker exited at start: {last_words}")
        _, _, rss = hello
        return int(rss)

    def set_ready(self, started: bool) -> None:
        """Tell ``__aenter__`` how the start went (once; it may have stopped listening)."""
        if not self.ready.done():
            self.ready.set_result(started)

    def send(self, message: object) -> None:
        """Queue a message on the socket (asyncio writes it as the worker reads)."""
        assert self.writer is not None
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        # Together: asyncio sends each write at once if it can, a syscall each.
        self.writer.writelines((HEADER.pack(len(payload)), payload))

    async def receive(self) -> Any:
        """The next message, or None at the end of the stream (the worker exited or died)."""
        assert self.reader is not None
        try:
            header = await self.reader.readexactly(HEADER.size)
            payload = await self.reader.readexactly(HEADER.unpack(header)[0])
        except asyncio.IncompleteReadError:
            return None
        return pickle.loads(payload)

    def holds_nothing(self) -> bool:
        """Neither rendering nor storing anything: a retiring worker may go."""
        return not self.jobs and not self.storing

    def close(self) -> None:
        """End its socket: the worker finishes what it holds, reads EOF and exits."""
        if self.writer is not None:
            self.writer.close()

    def kill(self) -> None:
        self.state = _State.GONE
        if self._started() and self.process is not None and self.process.exitcode is None:
            self.process.kill()

    def _started(self) -> bool:
        # pid stays None until Process.start (in a thread) has spawned it.
        return self.process is not None and self.process.pid is not None

    async def stderr_drained(self) -> None:
        if self.stderr is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.stderr.closed), _STDERR_DRAIN)

    def stderr_text(self) -> str:
        return self.stderr.text() if self.stderr is not None else ""

    async def reap(self) -> None:
        """Wait for the process to end (killing it after a grace) and release everything."""
        if self.writer is not None:
            self.writer.close()
        if self.stderr_transport is not None:
            self.stderr_transport.close()
        process = self.process
        if process is None or not self._started():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EXIT_GRACE
        while process.exitcode is None:
            if deadline and loop.time() > deadline:
                process.kill()
                deadline = 0.0
            await asyncio.sleep(0.01)
        self.exitcode = process.exitcode
        process.close()
        self.process = None


class RenderPool:
    """``async with RenderPool(workers, spec, timeout) as pool: await pool.render(svg)``."""

    def __init__(
        self,
        workers: int,
        spec: RenderSpec,
        timeout: float,
        *,
        memory_soft_limit: int = DEFAULT_MEMORY_SOFT_LIMIT,
        memory_hard_limit: int = DEFAULT_MEMORY_HARD_LIMIT,
        max_renders: int = DEFAULT_MAX_RENDERS,
        nice: int = 0,
        cpu_timeout: bool = False,
        puts: PutSettings | None = None,
    ) -> None:
        """``nice``: added to the workers' nice level (a slow lane yields the CPU to the
        others). ``cpu_timeout``: a render's timeout counts the CPU time its worker spends,
        not the clock, so a low-priority render is not cut for the time it waited for a CPU
        (a clock backstop of _CPU_CLOCK_BACKSTOP × the timeout still holds). ``puts``: how
        workers reach S3, for renders that come with a StoreOrder."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if not 0 < memory_soft_limit <= memory_hard_limit:
            raise ValueError(
                "memory limits must be positive and the soft one at most the hard one, got"
                f" {memory_soft_limit:,} and {memory_hard_limit:,}"
            )
        if max_renders < 1:
            raise ValueError(f"max_renders must be at least 1, got {max_renders}")
        self.workers = workers
        self.spec = spec
        self.timeout = timeout
        self.memory_soft_limit = memory_soft_limit
        self.memory_hard_limit = memory_hard_limit
        self.max_renders = max_renders
        self.stats = PoolStats()
        self.cpu_timeout = cpu_timeout
        self._limits = WorkerLimits(memory_soft_limit, memory_hard_limit, nice)
        self._puts = puts
        self._workers: list[_Worker] = []
        self._pending: deque[_Job] = deque()  # renders no worker holds yet, oldest first
        self._open = False
        self._closing = False
        self._restart_delay = _RESTART_BACKOFF[0]
        self._start_error = ""  # why the last worker that failed to start failed
        self._watcher: asyncio.TimerHandle | None = None

    @staticmethod
    def capacity_for(workers: int) -> int:
        """Renders a pool of ``workers`` runs or holds at once: one running and one queued each."""
        return _DEPTH * workers

    @property
    def capacity(self) -> int:
        """Renders this pool's workers hold at once; more wait in the pool's queue."""
        return self.capacity_for(self.workers)

    async def __aenter__(self) -> RenderPool:
        self._open, self._closing = True, False
        first = [self._spawn() for _ in range(self.workers)]
        try:
            started = await asyncio.gather(*(worker.ready for worker in first))
        except BaseException:  # cancelled while starting: leave nothing behind
            await self._close()
            raise
        if not all(started):
            error = self._start_error
            await self._close()
            raise RuntimeError(f"render workers failed to start: {error}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def busy_seconds(self) -> float:
        """Seconds this pool's workers have held a render, those under way included: its rate
        over the worker count is how busy they are (the ``ingest.render.busy`` metric). Safe
        to call from another thread (a metrics exporter's): it reads copies."""
        now = time.monotonic()
        under_way = 0.0
        for worker in list(self._workers):
            jobs = list(worker.jobs)
            if jobs and (started := jobs[0].started):
                under_way += now - started
        return self.stats.busy_seconds + under_way

    @property
    def watching(self) -> bool:
        """Whether the pool samples its workers (only while one holds a render)."""
        return self._watcher is not None

    def worker_pids(self) -> list[int]:
        """Pids of the workers that are up (health checks, tests); not those still starting."""
        return [w.pid for w in self._workers if w.state in (_State.READY, _State.RETIRING)]

    def process_pids(self) -> list[int]:
        """Pids of every worker process not yet reaped: up, starting, retiring or exiting.

        Equal in number to ``worker_pids`` and to the worker count once every replacement is
        over (a benchmark's CPU account: a reaped worker's CPU moves to this process's
        children's time, see ``backfill.stats.CpuMeter``)."""
        return [w.pid for w in self._workers if w.pid]

    async def render(
        self,
        svg: bytes,
        only: Only = None,
        *,
        # Not the await's timeout (asyncio.timeout would count waiting for a worker, and could
        # not stop the worker): it bounds the rendering, which the pool times and ends itself.
        timeout: float | None = None,  # noqa: ASYNC109
        store: StoreOrder | None = None,
        on_rendered: Callable[[], None] | None = None,
    ) -> RenderResult:
        """Render in a worker process: every rendition of the spec, or ``only`` those.

        ``timeout`` (seconds of rendering, not of waiting for a worker) overrides the pool's.
        ``store``: the worker also puts the renditions in S3; each comes back with its
        ``stored`` outcome and without its bytes (the timeout ends when the render does).
        ``on_rendered``: called (on the loop, from the pool; it must not raise) as soon as the
        render is done and succeeded, before the renditions are stored; never for a render
        that fails.
        Raises RenderRejected (bad input; RenderTimedOut, RenderOverMemory: not retryable) or
        RenderCrashed (the worker died twice under this render: retryable).
        """
        if not self._open:
            raise RuntimeError("RenderPool used outside 'async with'")
        seconds = self.timeout if timeout is None else timeout
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        if store is not None and self._puts is None:
            raise ValueError("a render with a StoreOrder needs a pool made with PutSettings")
        future = asyncio.get_running_loop().create_future()
        job = _Job(svg, only, seconds, future, store, stats=self.stats, on_rendered=on_rendered)
        self._pending.append(job)
        self._dispatch()
        # Cancelled here, the future is cancelled too: a worker's result for it is dropped.
        return await job.future

    # --- dispatch ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand waiting renders to ready workers, the least busy first, up to _DEPTH each."""
        while self._pending:
            job = self._pending[0]
            if job.future.done():  # its caller gave up while it waited
                self._pending.popleft()
                continue
            free = [
                w
                for w in self._workers
                if w.state is _State.READY and len(w.jobs) < _DEPTH and len(w.storing) < STORING
            ]
            if not free:
                return
            worker = min(free, key=lambda w: len(w.jobs))
            self._pending.popleft()
            worker.jobs.append(job)
            self._keep_watching()
            worker.sent += 1
            worker.send((id(job), job.svg, job.only, job.store))
            if len(worker.jobs) == 1:  # it was idle: the render starts now
                self._start_timer(worker, job)
            if worker.sent >= self.max_renders:
                self.stats.recycled_for_count += 1
                log.info("processor.render_worker_recycled", pid=worker.pid, reason="count")
                self._retire(worker)

    def _start_timer(self, worker: _Worker, job: _Job) -> None:
        """``job`` starts rendering on ``worker`` now."""
        worker.peak_data = 0
        job.started = time.monotonic()
        clock = job.timeout
        if self.cpu_timeout:
            job.cpu_start = cpu_seconds(worker.pid)
            clock *= _CPU_CLOCK_BACKSTOP
        job.timer = asyncio.get_running_loop().call_later(clock, self._overrun, worker, job)

    def _keep_watching(self) -> None:
        """Run `_watch` every _WATCH_INTERVAL while a worker holds a render: an idle pool
        takes no wakeups (twenty a second were most of an idle processor's CPU)."""
        if self._watcher is None and not self._closing:
            self._watcher = asyncio.get_running_loop().call_later(_WATCH_INTERVAL, self._watch)

    def _watch(self) -> None:
        """Sample every busy worker's VmData (see _NEAR_LIMIT) and, with ``cpu_timeout``,
        the CPU time of the render it runs; again after _WATCH_INTERVAL while any is busy."""
        self._watcher = None
        for worker in self._rendering():
            worker.peak_data = max(worker.peak_data, vm_data(worker.pid))
            job = worker.jobs[0]
            if (
                self.cpu_timeout
                and job.timer is not None
                and cpu_seconds(worker.pid) - job.cpu_start >= job.timeout
            ):
                self._overrun(worker, job)
        if self._rendering():  # asked again: an overrun above may have ended one
            self._keep_watching()

    def _rendering(self) -> list[_Worker]:
        """The workers that hold a render (not those already gone)."""
        return [w for w in self._workers if w.jobs and w.state is not _State.GONE]

    def _near_limit(self, worker: _Worker) -> bool:
        return worker.peak_data >= _NEAR_LIMIT * self.memory_hard_limit

    def _overrun(self, worker: _Worker, job: _Job) -> None:
        """``job`` has rendered for its whole timeout: kill its worker, and only that one."""
        if worker.state is _State.GONE or not worker.jobs or worker.jobs[0] is not job:
            return  # settled in the meantime
        self.stats.timeouts += 1
        log.warning("processor.render_timed_out", pid=worker.pid, seconds=job.timeout)
        worker.jobs.popleft()
        job.fail(RenderTimedOut(job.timeout))
        self._lose(worker)
        self._dispatch()

    def _retire(self, worker: _Worker) -> None:
        """No more renders for ``worker``; its successor starts now."""
        if worker.state is _State.READY:
            worker.state = _State.RETIRING
        self._replace(worker)
        if worker.holds_nothing():
            worker.close()

    def _lose(self, worker: _Worker) -> None:
        """Kill ``worker`` now; what it held but had not started, and the renders it was
        storing (not their fault, and never stored whole), go back to the queue."""
        worker.kill()
        self.stats.rss.pop(worker.pid, None)
        self._replace(worker)
        self._requeue([*worker.storing.values(), *worker.jobs])
        worker.storing.clear()
        worker.jobs.clear()

    def _replace(self, worker: _Worker) -> None:
        if not worker.replaced and not self._closing:
            worker.replaced = True
            self._spawn()

    def _requeue(self, jobs: Iterable[_Job]) -> None:
        """Renders that must run again: at the front of the queue, in their order."""
        jobs = list(jobs)
        for job in jobs:
            job.stop_timer()
        if self._closing:
            for job in jobs:
                job.fail(RenderCrashed("the render pool shut down before this image was rendered"))
            return
        self._pending.extendleft(reversed(jobs))

    # --- a worker's life -----------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        worker = _Worker()
        self._workers.append(worker)
        self.stats.workers_started += 1
        worker.task = asyncio.get_running_loop().create_task(self._run(worker))
        return worker

    async def _run(self, worker: _Worker) -> None:
        """Start ``worker``, take its results until its socket ends, then settle and reap it."""
        try:
            try:
                rss = await worker.start(self.spec, self._limits, self._puts)
            except Exception as exc:  # whatever stops a start (spawn, import, setup) is one
                worker.kill()  # if it hangs rather than died
                self._start_failed(worker, exc)
                return
            if self._closing or worker.state is _State.GONE:  # the pool closed meanwhile
                worker.kill()
                worker.set_ready(True)
                return
            worker.state = _State.READY
            self.stats.rss[worker.pid] = rss
            self._restart_delay = _RESTART_BACKOFF[0]
            worker.set_ready(True)
            self._dispatch()
            while True:
                try:
                    message = await worker.receive()
                except (OSError, pickle.UnpicklingError):
                    message = None
                if message is None:
                    break
                self._on_result(worker, message)
            await self._on_exit(worker)
        finally:
            worker.set_ready(False)
            await worker.reap()  # waits for an exit under way; kills what overstays the grace
            self._workers.remove(worker)

    def _on_result(self, worker: _Worker, message: tuple[int, str, object, int, bool]) -> None:
        if worker.state is _State.GONE:
            return  # killed for a timeout just after it finished: already settled
        ticket, kind, value, rss, retire = message
        if ticket in worker.storing:
            self._on_stored(worker, worker.storing.pop(ticket), kind, value, rss)
            return
        if not worker.jobs or id(worker.jobs[0]) != ticket:
            # Cannot happen with a sane worker; treat it as broken rather than misattribute.
            self._lose(worker)
            return
        job = worker.jobs.popleft()
        job.stop_timer()
        self.stats.rss[worker.pid] = rss
        if kind == "rendered":  # its store threads put the renditions now; the result follows
            worker.storing[ticket] = job
        # A failure near the limit is the limit's, whatever libvips called it (_NEAR_LIMIT).
        suspect = kind in ("rejected", "error") and self._near_limit(worker)
        if suspect:
            kind = "memory"
        if kind in ("rendered", "ok") and job.on_rendered is not None:
            rendered, job.on_rendered = job.on_rendered, None  # once, even if it renders again
            rendered()
        if kind == "rendered":
            pass
        elif kind == "ok":
            if not job.future.done():
                job.future.set_result(cast(RenderResult, value))
        elif kind == "memory":
            self.stats.over_memory_limit += 1
            job.fail(RenderOverMemory(self.memory_hard_limit))
        else:
            job.fail(value if isinstance(value, BaseException) else RuntimeError(repr(value)))
        if suspect:
            # It survived an allocation failure it did not notice: do not trust it further.
            # The render it may have begun since goes back to the queue.
            self._lose(worker)
        elif retire:
            if not worker.replaced:
                self.stats.recycled_for_memory += 1
            log.info("processor.render_worker_recycled", pid=worker.pid, reason="memory", rss=rss)
            # The worker reads nothing more: send what it holds elsewhere.
            self._requeue(worker.jobs)
            worker.jobs.clear()
            self._retire(worker)
        elif worker.jobs:
            self._start_timer(worker, worker.jobs[0])  # the next one starts now
        elif worker.state is _State.RETIRING and worker.holds_nothing():
            worker.close()
        self._dispatch()

    def _on_stored(self, worker: _Worker, job: _Job, kind: str, value: object, rss: int) -> None:
        """A rendered job's renditions are stored (each with its outcome, failed or not)."""
        self.stats.rss[worker.pid] = rss
        if kind == "ok":
            if not job.future.done():
                job.future.set_result(cast(RenderResult, value))
        else:
            job.fail(value if isinstance(value, BaseException) else RuntimeError(repr(value)))
        if worker.state is _State.RETIRING and worker.holds_nothing():
            worker.close()
        self._dispatch()

    async def _on_exit(self, worker: _Worker) -> None:
        """The worker's socket ended: expected (told to go, or killed), or it died."""
        expected = worker.state is _State.GONE or (
            worker.state is _State.RETIRING and worker.holds_nothing()
        )
        # What it was storing is requeued whole (not those renders' fault), ahead of what it
        # was rendering: they came first. The running render (jobs[0]) is the suspect.
        bystanders = list(worker.storing.values())
        jobs = list(worker.jobs)
        worker.storing.clear()
        worker.jobs.clear()
        for job in jobs:
            job.stop_timer()
        worker.state = _State.GONE
        self.stats.rss.pop(worker.pid, None)
        if expected:
            self._requeue([*bystanders, *jobs])  # only at shutdown is anything left
            return
        self._replace(worker)
        # Its last words tell an allocation failure from a crash; they may trail the socket.
        await worker.stderr_drained()
        await worker.reap()
        last_words = worker.stderr_text()
        over_memory = bool(jobs) and (
            ALLOCATION_FAILED.search(last_words) is not None or self._near_limit(worker)
        )
        if over_memory:
            self.stats.over_memory_limit += 1
            jobs.pop(0).fail(RenderOverMemory(self.memory_hard_limit))
            outcome = "over the memory limit"
        else:
            self.stats.crashes += 1
            outcome = "idle"
            if jobs:
                running = jobs[0]
                running.attempts += 1
                if running.attempts >= _ATTEMPTS:
                    jobs.pop(0).fail(
                        RenderCrashed("the render worker died while rendering this image")
                    )
                    outcome = "crashed twice"
                else:
                    self.stats.retries += 1
                    outcome = "retried"
        log.warning(
            "processor.render_worker_died",
            pid=worker.pid,
            exitcode=worker.exitcode,
            render=outcome,
            storing=len(bystanders),
            peak_data_mib=worker.peak_data // MIB,
            last_words=last_words[-300:].strip(),
        )
        # The one that died gets its retry; those behind it never started.
        self._requeue([*bystanders, *jobs])
        self._dispatch()

    def _start_failed(self, worker: _Worker, error: Exception) -> None:
        """A worker did not start: try again later, and fail renders that have no worker."""
        worker.state = _State.GONE
        worker.set_ready(False)
        if self._closing or not self._open:
            return
        self.stats.crashes += 1
        self._start_error = str(error)
        log.error(
            "processor.render_worker_start_failed", error=str(error), retry_in=self._restart_delay
        )
        if not any(w.state in (_State.READY, _State.STARTING) for w in self._workers):
            stranded, self._pending = list(self._pending), deque()
            for job in stranded:
                job.fail(RenderCrashed(f"no render worker could be started: {error}"))
        delay, self._restart_delay = (
            self._restart_delay,
            min(self._restart_delay * 2, _RESTART_BACKOFF[1]),
        )
        asyncio.get_running_loop().call_later(delay, self._respawn)

    def _respawn(self) -> None:
        if self._open and not self._closing:
            self._spawn()

    # --- shutdown ------------------------------------------------------------------------------

    async def _close(self) -> None:
        """Stop taking renders, let those in workers finish for up to ``timeout``, then end."""
        self._open = False
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        stranded, self._pending = list(self._pending), deque()
        self._requeue(stranded)  # fails them: closing
        running = [job.future for w in self._workers for job in [*w.jobs, *w.storing.values()]]
        if running:
            await asyncio.wait(running, timeout=self.timeout)
        for worker in list(self._workers):
            if not worker.holds_nothing() or worker.state is _State.STARTING:
                # Over the grace: cut short, its renders fail. One still starting fails its
                # start (or, not spawned yet, is killed once it has been).
                self._lose(worker)
            elif worker.state is not _State.GONE:
                worker.state = _State.RETIRING
                worker.close()
        tasks = [w.task for w in self._workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks)


def render_pool(
    settings: ProcessorSettings, *, slow: bool = False, puts: PutSettings | None = None
) -> RenderPool:
    """The render pool the settings describe, for the render queue's lane or the slow one
    (the backfill uses the render queue's); ``puts``: its workers store renditions."""
    if slow:
        workers, nice = settings.render_slow_workers, settings.render_slow_nice
    else:
        workers, nice = settings.render_workers, 0
    return RenderPool(
        workers,
        settings.render_spec(),
        settings.render_timeout,
        memory_soft_limit=settings.render_memory_soft_limit,
        memory_hard_limit=settings.render_memory_hard_limit,
        max_renders=settings.render_max_renders,
        nice=nice,
        cpu_timeout=True,
        puts=puts,
    )
