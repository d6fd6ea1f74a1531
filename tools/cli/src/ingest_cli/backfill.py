"""`ingest backfill`: (re)render the renditions of ready images from their S3 originals.

The work is done by ``ingest_processor.backfill`` with the processor's own render pool, render
settings and rendition keys, in ``--shards`` processes; this is the command-line front:
arguments, the progress line and the summary of all shards together.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ingest_cli.settings import CliSettings

if TYPE_CHECKING:
    from ingest_processor.public import BackfillStats, Selection


def add_backfill_command(commands: Any) -> None:
    """Register the subcommand on `ingest`'s subparsers."""
    backfill = commands.add_parser(
        "backfill",
        help="(re)render renditions of ready images from their originals; resumable",
        description="Render every configured width × format, with the current render profile, "
        "for the ready images selected (filters combine with AND) that lack one. Rerun the "
        "same command after an interruption to resume. Settings: INGEST_RENDER_* "
        "(what and how), INGEST_RENDER_WORKERS, INGEST_S3_CONCURRENCY, INGEST_DB_POOL_MAX, "
        "INGEST_BACKFILL_BATCH_SIZE.",
    )
    backfill.add_argument("--all", dest="everything", action="store_true", help="every ready image")
    backfill.add_argument("--family", metavar="SLUG", help="images of this family's products")
    backfill.add_argument("--product", metavar="ID", type=uuid.UUID, help="images of a product")
    backfill.add_argument(
        "--missing-format", choices=["png", "webp"], help="images without any rendition in it"
    )
    backfill.add_argument(
        "--missing-width", metavar="N", type=int, help="images without a rendition N px wide"
    )
    backfill.add_argument(
        "--workers", type=int, help="render processes (default INGEST_RENDER_WORKERS: all CPUs)"
    )
    backfill.add_argument(
        "--shards",
        type=int,
        help="processes, each with its own S3 client and a share of the render workers "
        "(default: one per render worker)",
    )
    backfill.add_argument("--no-progress", action="store_true", help="no progress line")
    backfill.set_defaults(run=cmd_backfill)


async def cmd_backfill(args: argparse.Namespace, settings: CliSettings) -> int:
    # Imported here: the processor brings libvips, which the other commands do not need.
    from ingest_processor.public import (
        BackfillSettings,
        Selection,
        SelectionError,
        ShardedBackfill,
        default_shards,
    )

    overrides = {"render_workers": args.workers} if args.workers else {}
    backfill_settings = BackfillSettings(**overrides)
    try:
        selection = Selection(
            everything=args.everything,
            family=args.family,
            product=args.product,
            missing_format=args.missing_format,
            missing_width=args.missing_width,
        )
        # Checked before connecting to anything.
        shards = args.shards or default_shards(backfill_settings)
        backfill = ShardedBackfill(backfill_settings, selection, shards)
    except SelectionError as exc:
        print(f"ingest backfill: {exc}", file=sys.stderr)
        return 2
    progress = (
        None if args.no_progress else asyncio.create_task(show_progress(lambda: backfill.stats))
    )
    interrupted = True
    try:
        stats = await backfill.run()
        interrupted = False
    finally:
        if progress is not None:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
        if interrupted:
            print(summary(backfill.stats, selection, interrupted=True))
    print(summary(stats, selection))
    return 1 if stats.failed else 0


# --- progress and summary --------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(stats: BackfillStats, width: int = 24) -> str:
    finished = stats.done + stats.failed
    total = max(stats.to_render, finished)
    share = finished / total if total else 1.0
    filled = int(share * width)
    rate = finished / stats.elapsed if stats.elapsed > 0 else 0.0
    eta = _duration((total - finished) / rate) if rate > 0 else "--:--"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {finished:,}/{total:,} {share:4.0%}  "
        f"{rate:6.1f} SVG/s  {stats.outputs / max(stats.elapsed, 1e-9):7.1f} out/s  "
        f"ETA {eta}  failed {stats.failed:,}"
    )


async def show_progress(
    stats: Callable[[], BackfillStats], stream: TextIO = sys.stderr, interval: float = 0.5
) -> None:
    """Refresh one stderr line (\\r) until cancelled; without a terminal, a line every 10 s.
    ``stats`` is called for each line: a sharded run's are combined afresh."""
    tty = stream.isatty()
    every = interval if tty else 10.0
    try:
        while True:
            await asyncio.sleep(every)
            stream.write(("\r" if tty else "") + progress_line(stats()) + ("" if tty else "\n"))
            stream.flush()
    finally:
        stream.write(("\r" if tty else "") + progress_line(stats()) + "\n")
        stream.flush()


def summary(stats: BackfillStats, selection: Selection, *, interrupted: bool = False) -> str:
    elapsed = stats.elapsed
    lines = [
        f"backfill   {selection.describe()}, profile {stats.profile}"
        + (" (interrupted: rerun the same command to resume)" if interrupted else ""),
    ]
    if stats.shards > 1:
        lines.append(f"shards     {stats.shards} processes, each with its own S3 client")
    earlier = f"({stats.earlier_done:,} done, {stats.earlier_failed:,} failed before)"
    if stats.resumed_from is not None:
        lines.append(f"resumed    after image {stats.resumed_from} {earlier}")
    elif stats.shards_resumed:
        lines.append(
            f"resumed    {stats.shards_resumed} of {stats.shards} shards from their "
            f"checkpoints {earlier}"
        )
    lines += [
        f"done       {stats.done:,} images, {stats.outputs:,} renditions "
        f"({stats.output_bytes / 2**20:.1f} MiB)",
        f"skipped    {stats.skipped:,} already up to date",
        f"failed     {stats.failed:,}",
    ]
    for reason, count in stats.failures.most_common(10):
        lines.append(f"  {count:>6,} × {reason}  (e.g. image {stats.failure_examples[reason]})")
    if len(stats.failures) > 10:
        lines.append(f"  … and {len(stats.failures) - 10} other reasons")
    rate = (stats.done + stats.failed) / elapsed if elapsed > 0 else 0.0
    lines.append(
        f"elapsed    {_duration(elapsed)} ({elapsed:.1f} s), {rate:.1f} SVGs/s, "
        f"{stats.outputs / elapsed if elapsed > 0 else 0:.1f} renditions/s, render pools fed "
        f"{stats.pool_fed:.0%} of the time"
    )
    if stats.rendered and (stats.cpu_render or stats.cpu_client):
        # What sizes a machine for a catalogue: CPU per image, render and client apart.
        lines.append(
            f"cpu        {1000 * stats.cpu_render / stats.rendered:.1f} ms per image rendering, "
            f"{1000 * stats.cpu_client / stats.rendered:.1f} ms in the backfill's own "
            "processes (S3, SQL)"
        )
    return "\n".join(lines)
