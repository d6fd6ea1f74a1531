"""`ingest reconcile`: re-announce uploads whose S3 event never reached the batcher.

The work is ``ingest_batcher.reconcile``, which the batcher also runs every
INGEST_RECONCILE_INTERVAL seconds; this is the command-line front: arguments and report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from ingest_cli.settings import CliSettings

if TYPE_CHECKING:
    from ingest_batcher.public import BatcherSettings, ReconcileReport


def add_reconcile_command(commands: Any) -> None:
    """Register the subcommand on `ingest`'s subparsers."""
    reconcile = commands.add_parser(
        "reconcile",
        help="re-announce uploads in S3 that the batcher never recorded",
        description="List the uploads bucket under uploads/ and send the batch queue an S3 "
        "event for every object with no upload row for its key and ETag, once it is older "
        "than the grace period (its own event may still be on its way). Safe to repeat.",
    )
    reconcile.add_argument(
        "--grace",
        type=_seconds,
        metavar="SECONDS",
        help="leave objects younger than this to their own event (default "
        "INGEST_RECONCILE_GRACE: 300)",
    )
    reconcile.add_argument("--dry-run", action="store_true", help="report, send nothing")
    reconcile.add_argument("--json", action="store_true", help="the report as one JSON object")
    reconcile.set_defaults(run=cmd_reconcile)


async def cmd_reconcile(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_common.telemetry.logging import configure_logging

    # The run logs a line; it goes to stderr so that stdout is the report alone.
    configure_logging(settings.service_name, fmt=settings.log_format, level=settings.log_level)
    return await run_reconcile(args, settings)


async def run_reconcile(args: argparse.Namespace, settings: CliSettings) -> int:
    """The command without the process's logging set-up (tests call this)."""
    # Imported here: the batcher's modules are not needed by the other commands.
    from ingest_batcher.public import reconcile
    from ingest_common.aws import Aws
    from ingest_common.db.pool import create_pool

    batcher = batcher_settings(settings)
    grace = batcher.reconcile_grace if args.grace is None else args.grace
    db = await create_pool(batcher)
    try:
        async with Aws(batcher) as aws:
            report = await reconcile(aws, db, batcher, grace=grace, dry_run=args.dry_run)
    finally:
        await db.close()
    print(json.dumps(dataclasses.asdict(report)) if args.json else format_report(report))
    return 0


def batcher_settings(settings: CliSettings) -> BatcherSettings:
    """The batcher's settings as the batcher would read them here, with the CLI's values.

    What the CLI's settings were given (by the environment or explicitly) carries over;
    the rest, such as INGEST_RECONCILE_GRACE, BatcherSettings reads from the environment.
    """
    from ingest_batcher.public import BatcherSettings

    return BatcherSettings(**settings.model_dump(exclude_unset=True))


def format_report(report: ReconcileReport) -> str:
    """The report in words: counts, then the keys re-announced (the first few)."""
    done = "to re-announce (dry run)" if report.dry_run else "re-announced"
    text = (
        f"listed {report.listed:,} upload{'' if report.listed == 1 else 's'}; "
        f"{report.recorded:,} recorded, "
        f"{report.too_recent:,} too recent (under {report.grace:g} s), "
        f"{report.reannounced:,} {done}"
    )
    if report.reannounced_keys:
        text += ": " + ", ".join(report.reannounced_keys)
        if (more := report.reannounced - len(report.reannounced_keys)) > 0:
            text += f", … and {more:,} more"
    return text


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds ≥ 0")
    return seconds
