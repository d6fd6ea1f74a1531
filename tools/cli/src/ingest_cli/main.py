"""The `ingest` command: operate the pipeline and look inside it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ingest_common.aws import Aws
from ingest_common.db.migrate import migrate
from ingest_common.db.pool import connect
from ingest_common.telemetry.tracing import configure_tracing
from ingest_common.topology import apply_topology, load_topology

from ingest_cli.errors import DEFECT, INTERRUPTED, NOT_FOUND, USAGE, CliError, explain
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
        raise CliError(USAGE, f"no such file or folder: {path}")
    async with Aws(settings) as aws:
        uploaded = await upload_set(aws, path, args.contributor)
    print(uploaded.upload_id)
    print(
        f"s3://{settings.uploads_bucket}/{uploaded.key}  trace {uploaded.trace_id}", file=sys.stderr
    )
    return 0


def parse_upload_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise CliError(USAGE, f"not an upload id: {text!r} (a UUID)") from None


def to_json(value: Any) -> str:
    """JSON for --json: datetimes in ISO 8601, UUIDs and decimals as strings."""
    return json.dumps(value, indent=2, default=str, ensure_ascii=False)


async def cmd_status(args: argparse.Namespace, settings: CliSettings) -> int:
    upload_id = parse_upload_id(args.upload_id)
    connection = await connect(settings.database_url)
    try:
        status = await load_status(connection, upload_id)
    finally:
        await connection.close()
    if status is None:
        raise CliError(NOT_FOUND, f"no upload {upload_id}")
    if args.json:
        print(
            to_json(
                {
                    "upload": status.upload,
                    "product": status.product,
                    "images": status.images,
                    "finished": status.finished,
                }
            )
        )
    else:
        print(format_status(status))
    return 0


async def cmd_dlq(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_cli.dlq import (
        UnknownQueue,
        dead_letter_json,
        format_dead_letter,
        list_dead_letters,
        redrive,
    )

    if args.limit is not None and args.limit < 0:
        raise CliError(USAGE, f"--limit must be 0 or more, not {args.limit}")
    try:
        async with Aws(settings) as aws:
            if args.action == "redrive":
                report = await redrive(aws, args.queue, args.limit)
                print(report)
                # 0 when everything that was there moved: what came later is the next run's.
                return 0 if report.complete else 1
            letters = await list_dead_letters(aws, args.queue, args.limit)
    except UnknownQueue as exc:
        raise CliError(USAGE, str(exc)) from None
    if args.json:
        print(to_json([dead_letter_json(letter) for letter in letters]))
    else:
        for letter in letters:
            print(format_dead_letter(letter))
    print(f"{len(letters)} message(s) in the dead-letter queue of {args.queue}", file=sys.stderr)
    return 0


async def cmd_trace(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_cli.trace import (
        DEFAULT_SPANS,
        SpanFormatError,
        find_trace_id,
        format_tree,
        load_spans,
        tree_json,
    )

    path = DEFAULT_SPANS if args.spans is None else Path(args.spans)
    if not path.exists():
        raise CliError(USAGE, f"no spans file {path} (ingest demo writes one)")
    try:
        spans = load_spans(path)
    except SpanFormatError as exc:
        raise CliError(USAGE, f"{path}: {exc}") from None
    trace_id = await find_trace_id(settings.database_url, args.upload_id, spans)
    if trace_id is None:
        raise CliError(NOT_FOUND, f"no trace of upload {args.upload_id} in the database or {path}")
    if args.json:
        print(to_json(tree_json(spans, trace_id, depth=args.depth)))
    else:
        print(format_tree(spans, trace_id, depth=args.depth))
    return 0


async def cmd_demo(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_cli.demo import run_demo

    return await run_demo(settings, Path(args.set), Path(args.output))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingest",
        description=__doc__,
        epilog="exit codes: 0 done, 1 not found / nothing matched / partly done, 2 usage or "
        "bad input, 3 database or AWS endpoint unreachable, 4 credentials missing or refused, "
        "70 a defect (traceback printed), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
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
    status.add_argument("--json", action="store_true", help="the status as JSON")
    status.set_defaults(run=cmd_status)
    from ingest_cli.search import add_search_commands

    add_search_commands(commands)
    dlq = commands.add_parser("dlq", help="list or replay a queue's dead letters")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument(
        "queue", help="a queue (ingest-render), its DLQ (ingest-render-dlq) or its role (render)"
    )
    dlq.add_argument("--json", action="store_true", help="list: the dead letters as JSON")
    dlq.add_argument("--limit", type=int, default=None, help="most to list or move (default all)")
    dlq.set_defaults(run=cmd_dlq)
    trace = commands.add_parser("trace", help="an upload's span tree, from collected spans")
    trace.add_argument("upload_id", help="an upload id (or a trace id)")
    # Default: trace.DEFAULT_SPANS, resolved in cmd_trace (importing trace here costs startup).
    trace.add_argument(
        "--spans",
        help="spans: ingest demo's JSON lines, an OTLP JSON file export, Jaeger or Tempo JSON",
    )
    trace.add_argument("--json", action="store_true", help="the span tree as JSON")
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
    # The demo shows the whole trace: its own upload's calls too, as the services' (demo.py).
    demo.set_defaults(run=cmd_demo, client_spans=1.0)
    return parser


def default_sample() -> Path:
    return Path(__file__).resolve().parents[4] / "sample" / "mdi-essentials"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("ingest-cli")
    except PackageNotFoundError:
        return "unknown"


def command_name(args: argparse.Namespace) -> str:
    """`status`, `dlq list`: how the error line names the command."""
    for dest in ("action", f"{args.command}_action"):
        action = getattr(args, dest, None)
        if isinstance(action, str):
            return f"{args.command} {action}"
    return str(args.command)


def run(argv: list[str] | None = None) -> None:
    """Run one command; expected failures are one line and an exit code (ingest_cli.errors)."""
    args = build_parser().parse_args(argv)
    settings = CliSettings()
    client_spans = getattr(args, "client_spans", settings.trace_client_spans)
    provider = configure_tracing(settings.service_name, client_spans=client_spans)
    try:
        code = asyncio.run(args.run(args, settings))
    except KeyboardInterrupt:
        code = INTERRUPTED
    except Exception as exc:
        failure = explain(exc, settings.database_url, settings.aws_endpoint_url)
        if failure is None:
            traceback.print_exc()
            message, code = f"unexpected {type(exc).__name__}, a defect: please report it", DEFECT
        else:
            message, code = failure.message, failure.code
        print(f"ingest {command_name(args)}: {message}", file=sys.stderr)
    finally:
        provider.shutdown()
    sys.exit(code)
