"""Render isolation through the whole stack: one heavy SVG never costs anyone else.

- Memory: large but valid SVGs keep every render process under its hard limit while they
  render, and under its soft limit afterwards.
- Time: slow SVGs (just under and just over the render timeout) uploaded together with
  another contributor's ordinary set: the ordinary set finishes within 1.5× its time
  alone, the slow ones end ready or failed for their own time, and nothing else is retried.
- Fidelity: every odd but valid SVG of tests/svgcorpus/odd.py, uploaded as one set, ends
  rendered (with its warnings) or refused with its reason; nothing is lost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from ingest_cli.status import format_status, load_status
from ingest_cli.upload import Uploaded, upload_set
from ingest_common.aws import Aws
from ingest_devstack.local import local_env
from ingest_processor.settings import ProcessorSettings

from tests.integration.pipeline import make_zip, manifest, svgs
from tests.reliability.faults import FAST, finish_and_check, stack, wait_finished
from tests.svgcorpus import odd
from tests.svgs import blurred_taking, paths

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def set_zip(tmp_path: Path, name: str, files: dict[str, bytes], **fields: object) -> Path:
    path = tmp_path / f"{name}.zip"
    path.write_bytes(make_zip({"manifest.json": manifest(list(files), **fields), **files}))
    return path


def render_workers(processor: int) -> list[int]:
    """The processor's child processes: its render workers (started from any of its threads)."""
    pids: list[int] = []
    for children in Path(f"/proc/{processor}/task").glob("*/children"):
        try:
            pids.extend(int(pid) for pid in children.read_text().split())
        except OSError:
            continue  # the thread ended meanwhile
    return pids


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """Every render process's RSS, every 50 ms, in a thread of its own."""

    def __init__(self, processor: int) -> None:
        self.processor = processor
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in render_workers(self.processor):
                self.peak = max(self.peak, rss(pid))


async def test_large_valid_svgs_keep_every_render_process_bounded(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
) -> None:
    settings = ProcessorSettings()
    big = {f"traced-{seed}.svg": paths(4_500_000, seed) for seed in (1, 2)}
    files = {**big, **svgs(3)}
    env = local_env(
        aws.settings.aws_endpoint_url or "", database_url, **{**FAST, "render_workers": "2"}
    )
    async with stack(env, tmp_path / "logs") as running:
        processor = running.processes["processor"].pid
        with RssSampler(processor) as sampler:
            uploaded = await upload_set(aws, set_zip(tmp_path, "big", files), "acme")
            await finish_and_check(
                aws, database_url, [uploaded], data_lost, expected_ready=len(files)
            )
        after = {pid: rss(pid) for pid in render_workers(processor)}
    figure("peak render process RSS (MiB)", sampler.peak / MIB)
    assert 0 < sampler.peak < settings.render_memory_hard_limit
    assert after, "the render processes are up"
    assert all(v < settings.render_memory_soft_limit for v in after.values()), after


@pytest.mark.quiet  # three wall times compared: make test runs it alone
async def test_slow_svgs_cost_only_themselves(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
) -> None:
    timeout = 4.0
    # Sized from this machine's CPU, so the slow SVGs land where they must.
    under = blurred_taking(0.6 * timeout)
    over = blurred_taking(1.8 * timeout)
    slow = {"under-1.svg": under, "under-2.svg": under + b" ", "over-1.svg": over}
    slow["over-2.svg"] = over + b" "
    env = local_env(
        aws.settings.aws_endpoint_url or "",
        database_url,
        **{
            **FAST,
            "render_workers": "2",
            "render_timeout": str(timeout),
            "render_slow_after": "0.5",
        },
    )
    # 96 icons (24, four times, with distinct contents): the slow set's first try holds one
    # of the two main-lane workers for render_slow_after of CPU (0.7-0.9 s of wall beside
    # the others) before the set moves to the slow lane, a fixed cost of about 0.5 s that
    # was up to half the time of a 24-icon set (0.9 s alone) and a third of a 48-icon one.
    ordinary = {
        f"{copy}-{name}": svg + b" " * copy for copy in range(4) for name, svg in svgs(24).items()
    }

    async def ordinary_set(name: str) -> tuple[Uploaded, float]:
        uploaded = await upload_set(
            aws, set_zip(tmp_path, name, ordinary, title=name, family="ordinary"), "bob"
        )
        [status] = await wait_finished(database_url, [uploaded], timeout=120)
        assert status.finished
        assert status.product is not None
        # On the database's clock, from the batcher's receipt to the index: wait_finished
        # looks every 0.5 s, as coarse as the difference this test compares.
        took = status.product["indexed_at"] - status.upload["received_at"]
        return uploaded, took.total_seconds()

    async with stack(env, tmp_path / "logs"):
        first, alone = await ordinary_set("alone")
        heavy = await upload_set(aws, set_zip(tmp_path, "slow", slow, family="heavy-art"), "alice")
        second, beside = await ordinary_set("beside the slow set")
        await finish_and_check(
            aws,
            database_url,
            [first, heavy, second],
            data_lost,
            expected_ready=2 * len(ordinary) + 2,
            expected_failed=2,
            timeout=240,
        )
        # Alone once more, now that the slow set is done: the baseline is the mean of a run
        # before and a run after, so a machine that slows down or speeds up meanwhile moves
        # both sides.
        _, again = await ordinary_set("alone again")
    figure("ordinary set alone (s)", alone)
    figure("ordinary set alone again (s)", again)
    figure("ordinary set beside the slow set (s)", beside)
    baseline = (alone + again) / 2
    assert beside <= 1.5 * baseline, (
        f"{beside:.2f} s beside the slow set, {alone:.2f} and {again:.2f} s alone"
    )
    failed = await db.fetch(
        "SELECT path, failure_reason FROM images WHERE status = 'failed' ORDER BY path"
    )
    assert [r["path"] for r in failed] == ["over-1.svg", "over-2.svg"]
    assert all(f"took longer than {timeout:g} s" in r["failure_reason"] for r in failed)
    log = (tmp_path / "logs" / "processor.log").read_text().splitlines()
    events = [json.loads(line) for line in log if line.startswith("{")]
    moved = [e for e in events if e["event"] == "processor.moved_to_slow_lane"]
    assert moved, "the slow SVGs went to the slow lane"
    retried = [e for e in events if e["event"] == "message.retry"]
    assert not retried, f"renders retried: {retried}"


async def test_every_odd_svg_ends_rendered_or_refused_with_its_reason(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
) -> None:
    cases = {f"{name}.svg": case for name, case in odd.CASES.items()}
    files = {name: case.svg for name, case in cases.items()}
    refused_first = {n for n, c in cases.items() if c.refused and c.by == "both"}
    failed_later = {n for n, c in cases.items() if c.refused and c.by == "render"}
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST)
    async with stack(env, tmp_path / "logs"):
        uploaded = await upload_set(aws, set_zip(tmp_path, "odd", files), "acme")
        await finish_and_check(
            aws,
            database_url,
            [uploaded],
            data_lost,
            expected_ready=len(files) - len(refused_first) - len(failed_later),
            expected_failed=len(failed_later),
        )
    row = await db.fetchrow("SELECT file_errors FROM uploads WHERE id = $1", uploaded.upload_id)
    assert row is not None
    errors = {e["path"]: e["reason"] for e in row["file_errors"]}
    assert set(errors) == refused_first
    for name in refused_first:
        assert cases[name].refused in errors[name], (name, errors[name])
    images = {
        r["path"]: r
        for r in await db.fetch("SELECT path, status::text, failure_reason, warnings FROM images")
    }
    for name in failed_later:
        assert images[name]["status"] == "failed", name
        assert cases[name].refused in images[name]["failure_reason"], name
    for name in set(files) - refused_first - failed_later:
        assert images[name]["status"] == "ready", name
        # One warning naming what was not drawn (all of the case's words), or none.
        warnings = images[name]["warnings"]
        assert len(warnings) == (1 if cases[name].warnings else 0), (name, warnings)
        assert all(words in warnings[0] for words in cases[name].warnings), (name, warnings)
    # What the contributor reads: every warning, under its image.
    async with db.acquire() as connection:
        status = await load_status(connection, uploaded.upload_id)
    assert status is not None
    text = format_status(status)
    warned = [n for n, c in cases.items() if c.warnings and n not in refused_first | failed_later]
    assert warned, "the corpus has images the renderer declines"
    assert text.count("warning: embedded image") == len(warned), text
