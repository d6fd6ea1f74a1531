"""Which lane an upload's renders take (ingest_processor.lanes)."""

from __future__ import annotations

import asyncio
import uuid

from ingest_processor.lanes import Uploads


async def test_an_unjudged_uploads_renders_take_turns_and_a_judged_ones_do_not() -> None:
    uploads, upload = Uploads(), uuid.uuid4()
    running, most = 0, 0

    async def render(verdict: str | None) -> None:
        nonlocal running, most
        async with uploads.trial(upload):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            if verdict == "proven":
                uploads.judge(upload, "proven")

    await asyncio.gather(*(render(None) for _ in range(3)))
    assert most == 1, "one at a time until judged"
    await render("proven")
    most = 0
    await asyncio.gather(*(render(None) for _ in range(3)))
    assert most == 3, "in parallel once proven"


async def test_a_verdict_lets_the_waiting_renders_go_before_the_trial_render_ends() -> None:
    """The pool judges a render when it is rendered; its PUTs then need not hold the others."""
    uploads, upload = Uploads(), uuid.uuid4()
    rendered, stored = asyncio.Event(), asyncio.Event()
    went: list[str] = []

    async def on_trial() -> None:
        async with uploads.trial(upload):
            await rendered.wait()
            uploads.judge(upload, "proven")
            await stored.wait()  # its PUTs, held
            went.append("trial stored")

    async def waiting(name: str) -> None:
        async with uploads.trial(upload):
            went.append(name)

    trial = asyncio.create_task(on_trial())
    others = asyncio.gather(waiting("a"), waiting("b"))
    await asyncio.sleep(0.01)
    assert went == [], "they wait while the trial render runs"
    rendered.set()
    await asyncio.wait_for(others, 5)
    assert went == ["a", "b"]
    stored.set()
    await trial
    assert went == ["a", "b", "trial stored"]


def test_the_first_verdict_stays_and_only_the_most_recent_uploads_are_remembered() -> None:
    uploads = Uploads(remembered=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    uploads.judge(first, "heavy")
    uploads.judge(first, "proven")  # a slow SVG's upload stays heavy
    assert uploads.heavy(first)
    uploads.judge(second, "proven")
    uploads.judge(third, "proven")
    assert not uploads.heavy(first), "forgotten: the oldest of three, with room for two"
