"""The `ingest` command: operate the pipeline and look inside it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from ingest_common.aws import Aws
from ingest_common.db.migrate import migrate
from ingest_common.db.pool import connect
from ingest_common.telemetry.tracing import configure_tracing
from ingest_common.topology import apply_topology, load_topology

from ingest_cli.settings import CliSettings
from ingest_cli.status import format_status, load_status
from ingest_cli.upload import upload_set

Command = Callable[[argparse.Namespace, CliSettings], Awaitable[int]]


async def cmd_migrate(args: argparse.Namespace, settings: CliSettings) -> int:
    applied = await migrate(settings.database_url)
    print(
        f"applied {len(applied)} migration(s)"
        + "".join(f"\n  {m.version:04d} {m.name}" for m in applied)
    )
    return 0


async def cmd_bootstrap(args: argparse.Namespace, settings: CliSettings) -> int:
    topology = load_topology(settings)
    async with Aws(settings) as aws:
        await apply_topology(aws, topology)
    for queue in topology.queues:
        print(
            f"queue   {queue.name} (dead letters: {queue.dead_letter_name}, "
            f"after {queue.max_receive_count} receives)"
        )
    for bucket in topology.buckets:
        print(f"bucket  {bucket.name}")
    return 0


async def cmd_upload(args: argparse.Namespace, settings: CliSettings) -> int:
    path = Path(args.path)
    if not path.exists():
        print(f"no such file or folder: {path}", file=sys.stderr)
        return 2
    async with Aws(settings) as aws:
        uploaded = await upload_set(aws, path, args.contributor)
    print(uploaded.upload_id)
    print(
        f"s3://{settings.uploads_bucket}/{uploaded.key}  trace {uploaded.trace_id}", file=sys.stderr
    )
    return 0


async def cmd_status(args: argparse.Namespace, settings: CliSettings) -> int:
    connection = await connect(settings.database_url)
    try:
        status = await load_status(connection, uuid.UUID(args.upload_id))
    finally:
        await connection.close()
    if status is None:
        print(f"no upload {args.upload_id}", file=sys.stderr)
        return 1
    print(format_status(status))
    return 0


async def cmd_dlq(args: argparse.Namespace, settings: CliSettings) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from ingest_cli.dlq import (
        UnknownQueue,
        describe_error,
        format_dead_letter,
        list_dead_letters,
        redrive,
    )

    if args.limit is not None and args.limit < 0:
        print(f"--limit must be 0 or more, not {args.limit}", file=sys.stderr)
        return 2
    try:
        async with Aws(settings) as aws:
            if args.action == "redrive":
                report = await redrive(aws, args.queue, args.limit)
                print(report)
                # 0 when everything that was there moved: what came later is the next run's.
                return 0 if report.complete else 1
            letters = await list_dead_letters(aws, args.queue, args.limit)
    except UnknownQueue as exc:
        print(exc, file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"ingest dlq {args.action} {args.queue}: {describe_error(exc)}", file=sys.stderr)
        return 1
    for letter in letters:
        print(format_dead_letter(letter))
    print(f"{len(letters)} message(s) in the dead-letter queue of {args.queue}", file=sys.stderr)
    return 0


async def cmd_trace(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_cli.trace import DEFAULT_SPANS, find_trace_id, format_tree, load_spans

    path = DEFAULT_SPANS if args.spans is None else Path(args.spans)
    if not path.exists():
        print(f"no spans file {path} (ingest demo writes one)", file=sys.stderr)
        return 2
    spans = load_spans(path)
    trace_id = await find_trace_id(settings.database_url, args.upload_id, spans)
    if trace_id is None:
        print(f"no trace of upload {args.upload_id} in the database or {path}", file=sys.stderr)
        return 1
    print(format_tree(spans, trace_id, depth=args.depth))
    return 0


async def cmd_demo(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_cli.demo import run_demo

    return await run_demo(settings, Path(args.set), Path(args.output))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply the database migrations").set_defaults(
        run=cmd_migrate
    )
    commands.add_parser(
        "bootstrap", help="create buckets, queues, DLQs, notifications"
    ).set_defaults(run=cmd_bootstrap)
    upload = commands.add_parser(
        "upload", help="upload a set (ZIP or folder); prints the upload id"
    )
    upload.add_argument("path")
    upload.add_argument("--contributor", required=True)
    upload.set_defaults(run=cmd_upload)
    status = commands.add_parser("status", help="an upload's state, file by file")
    status.add_argument("upload_id")
    status.set_defaults(run=cmd_status)
    from ingest_cli.search import add_search_commands

    add_search_commands(commands)
    dlq = commands.add_parser("dlq", help="list or replay a queue's dead letters")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument("queue", help="a queue (ingest-render) or its DLQ (ingest-render-dlq)")
    dlq.add_argument("--limit", type=int, default=None, help="most to list or move (default all)")
    dlq.set_defaults(run=cmd_dlq)
    trace = commands.add_parser("trace", help="an upload's span tree, from collected spans")
    trace.add_argument("upload_id", help="an upload id (or a trace id)")
    # Default: trace.DEFAULT_SPANS, resolved in cmd_trace (importing trace here costs startup).
    trace.add_argument("--spans", help="JSON-lines spans")
    trace.add_argument("--depth", type=int, default=None, help="levels to show (default all)")
    trace.set_defaults(run=cmd_trace)
    from ingest_cli.backfill import add_backfill_command
    from ingest_cli.contributors import add_contributors_command
    from ingest_cli.events import add_events_command
    from ingest_cli.reconcile import add_reconcile_command

    add_backfill_command(commands)
    add_reconcile_command(commands)
    add_events_command(commands)
    add_contributors_command(commands)
    demo = commands.add_parser("demo", help="run the whole pipeline locally on a sample set")
    demo.add_argument("--set", default=str(default_sample()), help="the set folder to upload")
    demo.add_argument("--output", default="demo-output", help="where to save the mosaic and logs")
    demo.set_defaults(run=cmd_demo)
    return parser


def default_sample() -> Path:
    return Path(__file__).resolve().parents[4] / "sample" / "mdi-essentials"


def run(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = CliSettings()
    provider = configure_tracing(settings.service_name)
    try:
        code = asyncio.run(args.run(args, settings))
    except KeyboardInterrupt:
        code = 130
    finally:
        provider.shutdown()
    sys.exit(code)
