"""An asyncio front to a pool of render processes, so one processor container uses all its CPUs.

Why processes: pyvips releases the GIL but takes it back on every call, so threads scale about
1.4x on two cores where processes scale about 1.9x (DESIGN.md).

Design, simplest that stays correct:

* At most ``2 × workers`` renders are submitted at once (an asyncio semaphore): each worker has
  its next render already waiting in the executor's queue, so it never idles for the round trip
  through the parent (result back, next SVG out). With one render per worker the workers idled
  about 10% of the time on two busy cores; `bench/render.py` measures this against a raw loop.
* The per-render timeout counts rendering, not waiting in that queue: a worker stamps the moment
  it starts each render in shared memory (``_Stamps``), and the parent's clock runs from there.
* Workers are started eagerly (``_Generation.start``) so process start-up and the pyvips import
  never count against a render's timeout.
* ``ProcessPoolExecutor`` cannot cancel a running task. When a render times out, the whole
  generation of workers is killed and marked broken; the next render lazily starts a new
  generation. The timed-out render raises ``RenderRejected``.
* Killing a generation fails every render in flight on it with ``BrokenProcessPool``, exactly as a
  worker crash (segfault, OOM kill) does, and from the parent the two cannot be told apart by
  victim: the executor fails all in-flight futures, not just the crashed one. So both cases are
  handled the same way: every render gets one transparent retry on a fresh generation; a render
  whose retry breaks too raises ``RenderCrashed`` (retryable: leave the message for SQS
  redelivery, which ends in the DLQ for an SVG that crashes the renderer every time).
  A generation that fails to start counts as a break too; in ``__aenter__`` it is raised
  (``BrokenProcessPool``, a RuntimeError), so a broken deployment fails at start-up.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ingest_processor.render import (
    Only,
    RenderRejected,
    RenderResult,
    RenderSpec,
    configure_vips,
    render_svg,
)

# Attempts per render when the pool breaks under it: the first plus one transparent retry.
_ATTEMPTS = 2
# Spawning a worker imports pyvips and loads libvips: seconds on a cold, busy container.
_START_TIMEOUT = 60.0
# spawn, not fork: the parent runs asyncio and libvips threads, neither survives fork.
_SPAWN = multiprocessing.get_context("spawn")
# Renders submitted per worker: one running, one queued behind it.
_DEPTH = 2
# Start stamps are kept in a ring indexed by ticket; far more slots than renders in flight.
_RING = 4096
# How often a render submitted long ago but not yet started is looked at again.
_NOT_STARTED_POLL = 0.1


class RenderCrashed(Exception):
    """The worker process died under this render twice (crash, OOM kill). Retryable."""


@dataclass
class PoolStats:
    """Counters for metrics and tests."""

    generations: int = 0
    timeouts: int = 0
    crashes: int = 0
    retries: int = 0


# --- worker side -------------------------------------------------------------------------------

_worker_spec: RenderSpec | None = None
_worker_stamps: Any = None  # the generation's RawArray of start times, see _Stamps


def _init_worker(spec: RenderSpec, parent: int, stamps: Any) -> None:
    """Executor initializer: runs once per worker; the spec travels here, not with every task."""
    global _worker_spec, _worker_stamps
    _die_with_parent(parent)
    configure_vips()
    _worker_spec = spec
    _worker_stamps = stamps


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """A processor killed with SIGKILL runs no clean-up: have the kernel end its workers.

    Without this, workers of a kill -9'd processor live on as orphans, each holding its
    memory, and a restarted processor adds a new set beside them.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_ready() -> int:
    return os.getpid()


def _worker_render(ticket: int, svg: bytes, only: Only) -> RenderResult:
    if _worker_spec is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("render worker used before its initializer ran")
    # CLOCK_MONOTONIC is one clock for every process of the machine: the parent reads it too.
    _worker_stamps[ticket % _RING] = time.monotonic()
    return render_svg(svg, _worker_spec, only)


class _Stamps:
    """When each submitted render started in a worker; 0.0 while it waits in the queue.

    Shared memory without a lock: one float per slot, written by the one worker running that
    ticket. Tickets in flight are far fewer than ``_RING``, so two never share a slot.
    """

    def __init__(self) -> None:
        self.array: Any = _SPAWN.RawArray("d", _RING)
        self._next = 0

    def ticket(self) -> int:
        ticket, self._next = self._next, self._next + 1
        self.array[ticket % _RING] = 0.0
        return ticket

    def started(self, ticket: int) -> float:
        return float(self.array[ticket % _RING])


# --- parent side -------------------------------------------------------------------------------


class _Generation:
    """One ProcessPoolExecutor and its workers; replaced as a whole when it breaks."""

    def __init__(self, workers: int, spec: RenderSpec) -> None:
        self.stamps = _Stamps()
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_SPAWN,
            initializer=_init_worker,
            initargs=(spec, os.getpid(), self.stamps.array),
        )
        self.workers = workers
        self.broken = False

    async def start(self) -> None:
        """Spawn every worker now and wait until each has run its initializer.

        The executor spawns a worker per submit while none is idle, so ``workers`` quick
        submissions start all of them.
        """
        pings = [
            asyncio.wrap_future(self.executor.submit(_worker_ready)) for _ in range(self.workers)
        ]
        try:
            # return_exceptions: every ping's failure is retrieved, none logged as unhandled.
            results = await asyncio.wait_for(
                asyncio.gather(*pings, return_exceptions=True), _START_TIMEOUT
            )
        except TimeoutError:
            results = [TimeoutError(f"workers not ready after {_START_TIMEOUT:g} s")]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.kill()
            # BrokenProcessPool, so a render treats a failed start like any other pool break.
            raise BrokenProcessPool(f"render workers failed to start: {errors[0]!r}")

    def submit(self, svg: bytes, only: Only) -> tuple[int, Future[RenderResult]]:
        if self.broken:  # killed by another render since we picked it: same as a crash
            raise BrokenProcessPool("render workers were recycled")
        ticket = self.stamps.ticket()
        return ticket, self.executor.submit(_worker_render, ticket, svg, only)

    def pids(self) -> list[int]:
        return [p.pid for p in (self.executor._processes or {}).values() if p.pid is not None]

    def kill(self) -> None:
        """Kill every worker at once; in-flight futures fail with BrokenProcessPool.

        There is no public API for this before Python 3.14 (``kill_workers``), hence
        ``_processes``. The executor's manager thread notices the deaths, fails the futures and
        reaps the processes.
        """
        self.broken = True
        for process in list((self.executor._processes or {}).values()):
            process.kill()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def close(self, grace: float) -> None:
        """Blocking: let running renders finish for up to ``grace`` seconds, then kill."""
        self.broken = True
        processes = list((self.executor._processes or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
        self.executor.shutdown(wait=True)


class RenderPool:
    """``async with RenderPool(workers, spec, timeout) as pool: await pool.render(svg)``."""

    def __init__(self, workers: int, spec: RenderSpec, timeout: float) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.workers = workers
        self.spec = spec
        self.timeout = timeout
        self.stats = PoolStats()
        self._generation: _Generation | None = None
        self._slots = asyncio.Semaphore(self.capacity)
        self._lock = asyncio.Lock()
        self._open = False

    @staticmethod
    def capacity_for(workers: int) -> int:
        """Renders a pool of ``workers`` admits at once: one running and one queued per worker."""
        return _DEPTH * workers

    @property
    def capacity(self) -> int:
        """Renders this pool admits at once; more wait for a slot in ``render``."""
        return self.capacity_for(self.workers)

    async def __aenter__(self) -> RenderPool:
        self._open = True
        try:
            await self._current()  # fail fast on a broken setup (no libvips, bad spec)
        except BaseException:
            self._open = False
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        generation, self._generation = self._generation, None
        if generation is not None:
            await asyncio.to_thread(generation.close, self.timeout)

    def worker_pids(self) -> list[int]:
        """Pids of the current generation's workers (health checks, tests)."""
        if self._generation is None or self._generation.broken:
            return []
        return self._generation.pids()

    async def render(self, svg: bytes, only: Only = None) -> RenderResult:
        """Render in a worker process: every rendition of the spec, or ``only`` those.

        Raises RenderRejected (bad input, or longer than ``timeout``: not retryable) or
        RenderCrashed (the worker died twice under this render: retryable).
        """
        async with self._slots:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    return await self._render_once(svg, only)
                except BrokenProcessPool:
                    if attempt == _ATTEMPTS:
                        raise RenderCrashed(
                            "the render worker died while rendering this image"
                        ) from None
                    self.stats.retries += 1
        raise AssertionError("unreachable")  # pragma: no cover

    async def _render_once(self, svg: bytes, only: Only) -> RenderResult:
        generation = await self._current()
        try:
            ticket, submitted = generation.submit(svg, only)
            future = asyncio.wrap_future(submitted)
            # asyncio.wait, not wait_for: a timeout must not cancel the future before we have
            # killed the worker that runs it.
            try:
                done = await self._wait(future, generation.stamps, ticket)
            except asyncio.CancelledError:
                # The caller gave up (shutdown); the worker finishes on its own, unobserved.
                future.cancel()
                raise
            if not done:
                self.stats.timeouts += 1
                self._discard(generation, crashed=False)
                # The kill will fail this future with BrokenProcessPool; nobody awaits it, so
                # cancel it now rather than have asyncio log an unretrieved exception.
                future.cancel()
                raise RenderRejected(f"took longer than {self.timeout:g} s to render")
            return future.result()
        except BrokenProcessPool:
            self._discard(generation, crashed=True)
            raise

    async def _wait(
        self, future: asyncio.Future[RenderResult], stamps: _Stamps, ticket: int
    ) -> bool:
        """Wait until the render is done (True) or has run ``timeout`` seconds (False)."""
        wait = self.timeout  # at the earliest, it started now
        while True:
            done, _ = await asyncio.wait({future}, timeout=wait)
            if done:
                return True
            started = stamps.started(ticket)
            if not started:  # still queued behind another render
                wait = min(self.timeout, _NOT_STARTED_POLL)
                continue
            wait = started + self.timeout - time.monotonic()
            if wait <= 0:
                return False

    def _discard(self, generation: _Generation, *, crashed: bool) -> None:
        """Kill a generation once; concurrent victims of the same break all land here."""
        if generation.broken:
            return
        if crashed:
            self.stats.crashes += 1
        generation.kill()

    async def _current(self) -> _Generation:
        """The live generation, starting a new one if the last broke (one start at a time)."""
        if not self._open:
            raise RuntimeError("RenderPool used outside 'async with'")
        async with self._lock:
            if self._generation is None or self._generation.broken:
                generation = _Generation(self.workers, self.spec)
                self._generation = generation
                self.stats.generations += 1
                try:
                    await generation.start()
                except BrokenProcessPool:
                    self.stats.crashes += 1
                    raise
                return generation
            return self._generation
