"""RenderPool with real worker processes: results, rejections, timeouts, crashes, recovery.

MDI_FORWARD is a real icon, from tests/svgs.py. The slow SVGs are synthetic: blurred circles,
whose cost grows with their number and the output size (about 0.4 s for 10 and 6 s for 200 at
512 px on one 2024 laptop core).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from ingest_processor.pool import RenderCrashed, RenderPool
from ingest_processor.render import RenderRejected, RenderSpec, render_svg

from tests.svgs import MDI_FORWARD

SPEC = RenderSpec(widths=(64, 512))


def _blurred(circles: int) -> bytes:
    shapes = "".join(
        f'<circle cx="{i * 37 % 512}" cy="{i * 91 % 512}" r="200" fill="#{i % 256:02x}8040" '
        'filter="url(#b)"/>'
        for i in range(circles)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><defs>'
        '<filter id="b"><feGaussianBlur stdDeviation="50"/></filter></defs>'
        f"{shapes}</svg>"
    ).encode()


SLOW = _blurred(400)  # many seconds: always over the test timeouts
MEDIUM = _blurred(10)  # a fraction of a second
LONG = _blurred(60)  # a couple of seconds: long enough to kill a worker under it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _wait_for_new_workers(pool: RenderPool, old: set[int]) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = pool.worker_pids()
        if pids and not set(pids) & old:
            return pids
        await asyncio.sleep(0.02)
    raise AssertionError("no new generation of workers started")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


async def test_renders_in_workers_like_in_process() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=30) as pool:
        results = await asyncio.gather(*(pool.render(MDI_FORWARD) for _ in range(5)))

    expected = render_svg(MDI_FORWARD, SPEC)
    assert all(result == expected for result in results)
    assert pool.stats.generations == 1


async def test_rejection_crosses_the_process_boundary() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=30) as pool:
        with pytest.raises(RenderRejected) as caught:
            await pool.render(b"\x89PNG\r\n\x1a\n not really")
        assert (await pool.render(MDI_FORWARD)).source_width == 24

    assert caught.value.reason == "is not an SVG image (libvips saw png)"
    assert pool.stats.generations == 1  # a rejection is not a crash


async def test_timeout_rejects_kills_the_worker_and_retries_bystanders() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=3.0) as pool:
        first_workers = pool.worker_pids()
        slow = asyncio.create_task(pool.render(SLOW))
        bystanders = []
        # Keep the other worker busy for the whole time, so a render is in flight on it when the
        # slow one's generation is killed.
        while not slow.done():
            bystanders.append(asyncio.create_task(pool.render(MEDIUM)))
            await asyncio.wait({slow, bystanders[-1]}, return_when=asyncio.FIRST_COMPLETED)

        with pytest.raises(RenderRejected) as caught:
            await slow
        results = await asyncio.gather(*bystanders)
        after = await pool.render(MDI_FORWARD)

        assert caught.value.reason == "took longer than 3 s to render"
        assert all(r.renditions[-1].width == 512 for r in results)
        assert after.source_width == 24
        assert pool.stats.timeouts == 1
        assert pool.stats.generations == 2
        assert pool.stats.retries >= 1  # the bystander in flight at the kill
        assert not set(pool.worker_pids()) & set(first_workers)
        assert not any(_alive(pid) for pid in first_workers)


async def test_the_timeout_counts_rendering_not_waiting_behind_another_render() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=60) as pool:
        started = time.monotonic()
        await pool.render(LONG)
        one = time.monotonic() - started  # one render in this very worker, warm
        # Four at once on one worker: the last waits three renders in the queue. Counted from
        # their submission, two would go over the timeout; counted from rendering, none does.
        # (2.5×: room for a machine shared with other work.)
        pool.timeout = 2.5 * one
        results = await asyncio.gather(*(pool.render(LONG) for _ in range(4)))

    assert [r.renditions[-1].width for r in results] == [512] * 4
    assert (pool.stats.timeouts, pool.stats.generations) == (0, 1)


async def test_tiny_timeout_rejects_and_pool_keeps_working() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=0.001) as pool:
        with pytest.raises(RenderRejected, match="took longer than"):
            await pool.render(MEDIUM)
        pool.timeout = 30
        assert (await pool.render(MDI_FORWARD)).source_width == 24


async def test_a_worker_crash_is_retried_transparently() -> None:
    async with RenderPool(workers=1, spec=SPEC, timeout=60) as pool:
        render = asyncio.create_task(pool.render(LONG))
        await asyncio.sleep(0.3)
        _kill(pool.worker_pids())

        result = await render

        assert result.renditions[-1].width == 512
        assert (pool.stats.crashes, pool.stats.retries, pool.stats.generations) == (1, 1, 2)


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


async def test_exit_stops_the_workers() -> None:
    async with RenderPool(workers=2, spec=SPEC, timeout=5) as pool:
        pids = pool.worker_pids()
        assert len(pids) == 2

    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="outside"):
        await pool.render(MDI_FORWARD)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        RenderPool(workers=0, spec=SPEC, timeout=1)
    with pytest.raises(ValueError, match="timeout"):
        RenderPool(workers=1, spec=SPEC, timeout=0)
