"""RenderPool with real worker processes: results, rejections, timeouts, crashes, memory.

MDI_FORWARD is a real icon, from tests/svgs.py. The slow SVGs are synthetic: blurred circles,
whose cost grows with their number and the output size (about 0.4 s for 10 and 6 s for 200 at
512 px on one 2024 laptop core). The big SVGs are synthetic too: 4.5 MB of small filled paths,
valid by the batcher's check, which librsvg holds as a few hundred MB of parsed document.

Timing: renders that must finish get a per-call timeout far above their cost (``_AMPLE``), so a
machine shared with other work slows them without failing them; only the renders meant to
overrun have a tight one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ingest_batcher.svgcheck import check_svg
from ingest_processor import pool as pool_module
from ingest_processor.pool import RenderCrashed, RenderOverMemory, RenderPool, RenderTimedOut
from ingest_processor.render import MIB, RenderRejected, RenderSpec, render_svg
from ingest_processor.worker import minor_faults

from tests.svgs import MDI_FORWARD, blurred, inner_shadows, paths

SPEC = RenderSpec(widths=(64, 512))
_AMPLE = 120.0  # seconds: the timeout of renders that must not time out


SLOW = blurred(400)  # many seconds: always over the test timeouts
MEDIUM = blurred(10)  # a fraction of a second
LONG = blurred(60)  # a couple of seconds: long enough to kill a worker under it


BIG = [paths(4_500_000, seed) for seed in (1, 2)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _rss(pid: int) -> int:
    """A process's resident set in bytes, from /proc; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class _RssSampler:
    """Samples every worker's RSS from /proc every 50 ms, in a thread, while it is open."""

    def __init__(self, pool: RenderPool) -> None:
        self.pool = pool
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.pool.worker_pids():
                self.peak = max(self.peak, _rss(pid))
                self.samples += 1


async def _wait_for_new_workers(pool: RenderPool, old: set[int]) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = pool.worker_pids()
        if pids and not set(pids) & old:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError("no new workers started")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


async def test_renders_in_workers_like_in_process() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=30) as pool:
        results = await asyncio.gather(*(pool.render(MDI_FORWARD) for _ in range(5)))
        rss = dict(pool.stats.rss)
        pids = pool.worker_pids()

    expected = render_svg(MDI_FORWARD, SPEC)
    assert all(result == expected for result in results)
    assert pool.stats.workers_started == 2
    assert sorted(rss) == sorted(pids)  # the last RSS each worker reported
    assert all(10 * MIB < v < pool.memory_soft_limit for v in rss.values()), rss


async def test_busy_seconds_count_the_time_workers_hold_a_render_and_no_more() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=_AMPLE) as pool:
        assert pool.busy_seconds() == 0.0
        started = time.monotonic()
        results = await asyncio.gather(*(pool.render(MEDIUM) for _ in range(6)))
        wall = time.monotonic() - started
        busy = pool.busy_seconds()
        await asyncio.sleep(0.3)  # idle: nothing more is counted
        idle = pool.busy_seconds() - busy
        # A render under way counts before its result: the reading grows while it renders.
        running = asyncio.create_task(pool.render(MEDIUM))
        await asyncio.sleep(0.2)
        under_way = pool.busy_seconds() - busy
        await running

    rendering = sum(r.ended_ns - r.started_ns for res in results for r in res.renditions) / 1e9
    # Each render is held from its start to its result, which covers the worker's own timing of
    # its renditions; two workers cannot hold renders for more than twice the wall time.
    assert rendering <= busy <= 2 * wall
    assert idle == 0.0
    assert 0.1 < under_way < 1.0


async def test_the_pool_samples_its_workers_only_while_one_holds_a_render() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=_AMPLE) as pool:
        assert not pool.watching, "idle from the start: no timer wakes the event loop"
        running = asyncio.create_task(pool.render(MEDIUM))
        await asyncio.sleep(0)  # render() hands it to the worker before its first await
        assert pool.watching
        await running
        await asyncio.sleep(3 * pool_module._WATCH_INTERVAL)
        assert not pool.watching, "idle again"
        await pool.render(MDI_FORWARD)  # and again when the next render comes
        assert pool.watching
        await asyncio.sleep(3 * pool_module._WATCH_INTERVAL)
        assert not pool.watching


async def test_rejection_crosses_the_process_boundary() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=30) as pool:
        with pytest.raises(RenderRejected) as caught:
            await pool.render(b"\x89PNG\r\n\x1a\n not really")
        assert (await pool.render(MDI_FORWARD)).source_width == 24

    assert caught.value.reason == "is not an SVG image (libvips saw png)"
    assert pool.stats.workers_started == 1  # a rejection is not a crash
    assert pool.stats.crashes == 0


async def test_a_timeout_replaces_only_its_worker_and_bystanders_finish() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=3.0) as pool:
        first_workers = pool.worker_pids()
        slow = asyncio.create_task(pool.render(SLOW))
        await asyncio.sleep(0)  # SLOW reaches an idle worker first
        bystanders = []
        # Keep the other worker busy the whole time, so a render is in flight on it when the
        # slow one's worker is killed.
        while not slow.done():
            bystanders.append(asyncio.create_task(pool.render(MEDIUM, timeout=_AMPLE)))
            await asyncio.wait({slow, bystanders[-1]}, return_when=asyncio.FIRST_COMPLETED)

        with pytest.raises(RenderTimedOut) as caught:
            await slow
        results = await asyncio.gather(*bystanders)
        after = await pool.render(MDI_FORWARD)
        now = pool.worker_pids()

    assert isinstance(caught.value, RenderRejected)
    assert caught.value.reason == "took longer than 3 s to render"
    assert caught.value.seconds == 3.0
    assert all(r.renditions[-1].width == 512 for r in results)
    assert after.source_width == 24
    stats = pool.stats
    assert (stats.timeouts, stats.retries, stats.crashes, stats.workers_started) == (1, 0, 0, 3)
    gone = [pid for pid in first_workers if pid not in now]
    assert len(gone) == 1, (first_workers, now)  # the slow one's worker, and only it
    assert not _alive(gone[0])


async def test_a_render_queued_behind_a_timed_out_one_completes() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=_AMPLE) as pool:
        slow = asyncio.create_task(pool.render(SLOW, timeout=2.0))
        # The one worker holds two renders: this one waits in its socket behind SLOW.
        queued = asyncio.create_task(pool.render(MEDIUM))
        with pytest.raises(RenderTimedOut, match="took longer than 2 s"):
            await slow
        result = await queued

    assert result.renditions[-1].width == 512
    stats = pool.stats
    assert (stats.timeouts, stats.retries, stats.crashes, stats.workers_started) == (1, 0, 0, 2)


async def test_the_timeout_counts_rendering_not_waiting_behind_another_render() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=60) as pool:
        started = time.monotonic()
        await pool.render(LONG)
        one = time.monotonic() - started  # one render in this very worker, warm
        # Eight at once on one worker: the last waits seven renders. Counted from submission,
        # three would go over the timeout; counted from rendering, none does. (5×: room for a
        # render slowed by other work on the machine, as in CI, where 2.5× once was not.)
        pool.timeout = 5 * one
        results = await asyncio.gather(*(pool.render(LONG) for _ in range(8)))

    assert [r.renditions[-1].width for r in results] == [512] * 8
    assert (pool.stats.timeouts, pool.stats.workers_started) == (0, 1)


async def test_tiny_timeout_rejects_and_pool_keeps_working() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=0.001) as pool:
        with pytest.raises(RenderTimedOut, match="took longer than"):
            await pool.render(MEDIUM)
        pool.timeout = 30
        assert (await pool.render(MDI_FORWARD)).source_width == 24


async def test_a_per_call_timeout_overrides_the_pools() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=0.001) as pool:
        # Longer than the pool's: this render has all it needs.
        assert (await pool.render(MEDIUM, timeout=_AMPLE)).renditions[-1].width == 512
        pool.timeout = _AMPLE
        # Shorter than the pool's.
        with pytest.raises(RenderTimedOut) as caught:
            await pool.render(SLOW, timeout=1.5)
        assert (await pool.render(MDI_FORWARD)).source_width == 24
        with pytest.raises(ValueError, match="timeout"):
            await pool.render(MDI_FORWARD, timeout=0)

    assert caught.value.reason == "took longer than 1.5 s to render"
    assert caught.value.seconds == 1.5
    assert pool.stats.timeouts == 1


async def test_a_worker_crash_is_retried_transparently() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=60) as pool:
        render = asyncio.create_task(pool.render(LONG))
        await asyncio.sleep(0.3)
        _kill(pool.worker_pids())

        result = await render

        assert result.renditions[-1].width == 512
        stats = pool.stats
        assert (stats.crashes, stats.retries, stats.workers_started) == (1, 1, 2)


async def test_a_crash_costs_only_its_workers_renders() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=_AMPLE) as pool:
        victim, bystander = pool.worker_pids()
        # Two renders on each worker: LONG runs, MEDIUM waits behind it.
        renders = [asyncio.create_task(pool.render(svg)) for svg in (LONG, LONG, MEDIUM, MEDIUM)]
        await asyncio.sleep(0.3)
        _kill([victim])

        results = await asyncio.gather(*renders)
        now = pool.worker_pids()

    assert [r.renditions[-1].width for r in results] == [512] * 4
    # Only the render that was running on the victim was retried; the one queued behind it
    # never started, and the bystander's renders never noticed.
    stats = pool.stats
    assert (stats.crashes, stats.retries, stats.workers_started) == (1, 1, 3)
    assert bystander in now
    assert victim not in now


async def test_a_second_crash_raises_render_crashed_and_pool_recovers() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=60) as pool:
        render = asyncio.create_task(pool.render(LONG))
        await asyncio.sleep(0.3)
        first = pool.worker_pids()
        _kill(first)
        await _wait_for_new_workers(pool, set(first))
        await asyncio.sleep(0.3)
        _kill(pool.worker_pids())

        with pytest.raises(RenderCrashed):
            await render
        assert (await pool.render(MDI_FORWARD)).source_width == 24
        assert pool.stats.crashes == 2


def test_big_svgs_are_valid_uploads() -> None:
    """The batcher lets them through and the spec's limits allow them (rendering checks more)."""
    spec = RenderSpec()
    for svg in BIG:
        assert 4_400_000 < len(svg) < spec.max_input_bytes
        assert check_svg(svg, spec.max_input_bytes) is None
        declared = re.search(rb'width="(\d+)" height="(\d+)"', svg[:200])
        assert declared is not None
        width, height = int(declared[1]), int(declared[2])
        assert max(width, height) <= spec.max_side
        assert width * height <= spec.max_declared_pixels


async def test_big_svgs_stay_under_the_hard_limit_and_workers_come_back_down() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=_AMPLE) as pool:
        with _RssSampler(pool) as sampler:
            results = await asyncio.gather(*(pool.render(svg) for svg in BIG * 2))
        after = {pid: _rss(pid) for pid in pool.worker_pids()}

    assert [r.source_width for r in results] == [1000] * 4
    assert sampler.samples > 10
    # libvips' operation cache used to keep every parse of a render: over 850 MiB here.
    assert sampler.peak < pool.memory_hard_limit, f"a worker peaked at {sampler.peak / MIB:.0f} MiB"
    assert len(after) == 2
    assert all(0 < rss < pool.memory_soft_limit for rss in after.values()), after
    assert (pool.stats.crashes, pool.stats.over_memory_limit) == (0, 0)


async def test_a_worker_over_the_soft_limit_is_replaced_and_nothing_is_lost() -> None:
    # Every worker is over a 1 MiB soft limit after any render: each one renders once, and the
    # render waiting in its socket goes to another worker.
    async with RenderPool(workers=2, spec=SPEC, timeout=_AMPLE, memory_soft_limit=MIB) as pool:
        results = await asyncio.gather(*(pool.render(MDI_FORWARD) for _ in range(6)))

    expected = render_svg(MDI_FORWARD, SPEC)
    assert all(result == expected for result in results)
    stats = pool.stats
    assert stats.recycled_for_memory == 6
    assert stats.workers_started == 8
    assert (stats.crashes, stats.retries, stats.timeouts) == (0, 0, 0)


async def test_a_worker_is_replaced_after_max_renders() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=_AMPLE, max_renders=2) as pool:
        results = await asyncio.gather(*(pool.render(MDI_FORWARD) for _ in range(7)))

    assert all(r.source_width == 24 for r in results)
    stats = pool.stats
    # Workers 1-3 render two each, worker 4 the last one; the retired ones' successors started
    # as each took its second render.
    assert (stats.recycled_for_count, stats.workers_started) == (3, 4)
    assert (stats.crashes, stats.retries, stats.recycled_for_memory) == (0, 0, 0)


# A worker rests at about 60 MiB and BIG needs about 280 here. How a render meets the limit
# depends on where an allocation fails. Measured on a 2-core dev machine: at 128 and 192 MiB
# librsvg's parse aborts the worker ("memory allocation of N bytes failed"); at 256 libvips
# reports "Error creating thread" (thread stacks count too) and the worker lives, so only the
# sampled VmData tells it was the limit. (At 264 a C library died of SIGSEGV without a word;
# too close to what BIG needs to test.) Whatever the path, the outcome must be the same.
# 256 is not tested: that close to BIG's need, a loaded machine (libvips starts fewer
# threads) renders BIG within the limit, which is right, and the sample may miss the peak.
@pytest.mark.parametrize("limit_mib", [128, 192])
async def test_the_hard_limit_rejects_the_render_with_a_reason(limit_mib: int) -> None:
    async with RenderPool(
        workers=1,
        spec=SPEC,
        timeout=_AMPLE,
        memory_soft_limit=96 * MIB,
        memory_hard_limit=limit_mib * MIB,
    ) as pool:
        with pytest.raises(RenderOverMemory) as caught:
            await pool.render(BIG[0])
        assert (await pool.render(MDI_FORWARD)).source_width == 24

    assert isinstance(caught.value, RenderRejected)  # not retryable
    assert caught.value.reason == f"needs more than {limit_mib} MiB of memory to render"
    stats = pool.stats
    assert (stats.over_memory_limit, stats.crashes, stats.retries) == (1, 0, 0)


async def test_a_worker_reuses_freed_surfaces_instead_of_faulting_in_fresh_pages() -> None:
    # With glibc's defaults every filter surface was a fresh mmap whose pages the kernel
    # zeroed on first touch: 8,100-8,600 page faults per render of this SVG (on fluent's
    # emoji a third of the render CPU); reused from the heap, 1,300-1,700.
    svg = inner_shadows(3)
    async with RenderPool(workers=1, spec=RenderSpec(), timeout=_AMPLE) as pool:
        await pool.render(svg)  # the heap grows to what the render needs, once
        (pid,) = pool.worker_pids()
        before = minor_faults(pid)
        for _ in range(3):
            await pool.render(svg)
        per_render = (minor_faults(pid) - before) / 3
    assert per_render < 5000, f"{per_render:.0f} page faults per render"


async def test_exit_stops_the_workers() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=5) as pool:
        pids = pool.worker_pids()
        assert len(pids) == 2

    assert not any(_alive(pid) for pid in pids)
    assert pool.stats.rss == {}
    with pytest.raises(RuntimeError, match="outside"):
        await pool.render(MDI_FORWARD)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        RenderPool(workers=0, spec=SPEC, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        RenderPool(workers=1, spec=SPEC, timeout=0)
    with pytest.raises(ValueError, match="memory limits"):
        RenderPool(
            workers=1, spec=SPEC, timeout=1, memory_soft_limit=2 * MIB, memory_hard_limit=MIB
        )
    with pytest.raises(ValueError, match="max_renders"):
        RenderPool(workers=1, spec=SPEC, timeout=1, max_renders=0)


async def test_a_slow_lane_yields_the_cpu_and_is_timed_by_the_cpu_it_uses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The processor's slow lane: workers at a higher nice level, timed by their CPU time.
    Sharing one CPU with a busy process at normal priority, a render takes several times
    longer by the clock than the CPU time it needs, and is not cut for it."""
    # At nice 10 beside one busy process the worker gets about a tenth of its CPU, close to
    # the clock backstop (10x the timeout); in CI, other tests' processes on the same CPU took
    # it past. The backstop is not what this test is about.
    monkeypatch.setattr(pool_module, "_CPU_CLOCK_BACKSTOP", 1000.0)
    async with RenderPool(1, SPEC, _AMPLE) as alone:
        started = time.monotonic()
        await alone.render(MEDIUM)
        needs = time.monotonic() - started  # about its CPU time: nothing else competes
    async with RenderPool(1, SPEC, 2.5 * needs, nice=10, cpu_timeout=True) as lane:
        [pid] = lane.worker_pids()
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(pid, {cpu})
        hog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass",
            ]
        )
        try:
            await asyncio.sleep(0.2)
            started = time.monotonic()
            result = await lane.render(MEDIUM)
            took = time.monotonic() - started
        finally:
            hog.kill()
            hog.wait()
    assert result.renditions[-1].width == 512
    assert took > 2.5 * needs, f"{took:.1f} s by the clock: the hog did not take the CPU"
    assert lane.stats.timeouts == 0
