"""`ingest backfill`: (re)render the renditions of ready images from their S3 originals.

The work is done by ``ingest_processor.backfill`` with the processor's own render pool, render
settings and rendition keys; this is the command-line front: arguments, progress, summary.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from ingest_cli.settings import CliSettings


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
    backfill.add_argument("--no-progress", action="store_true", help="no progress line")
    backfill.set_defaults(run=cmd_backfill)


async def cmd_backfill(args: argparse.Namespace, settings: CliSettings) -> int:
    # Imported here: the processor brings libvips, which the other commands do not need.
    from ingest_common.aws import Aws
    from ingest_common.db.pool import create_pool
    from ingest_processor.public import (
        Backfill,
        BackfillSettings,
        Selection,
        SelectionError,
        show_progress,
        summary,
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
        selection.check(backfill_settings.render_spec())  # before connecting to anything
    except SelectionError as exc:
        print(f"ingest backfill: {exc}", file=sys.stderr)
        return 2
    db = await create_pool(backfill_settings)
    try:
        async with Aws(backfill_settings) as aws:
            backfill = Backfill(backfill_settings, aws, db, selection)
            progress = (
                None if args.no_progress else asyncio.create_task(show_progress(backfill.stats))
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
    finally:
        await db.close()
    print(summary(stats, selection))
    return 1 if stats.failed else 0
