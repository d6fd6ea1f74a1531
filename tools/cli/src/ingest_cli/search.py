"""`ingest search` (sets and icons, with facets) and `ingest reindex`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ingest_common.db.pool import connect
from ingest_common.search import (
    FACETS,
    MAX_LIMIT,
    MAX_OFFSET,
    SearchQuery,
    SearchResults,
    describe_errors,
    reindex,
    search,
)
from pydantic import ValidationError

from ingest_cli.settings import CliSettings


async def cmd_search(args: argparse.Namespace, settings: CliSettings) -> int:
    try:
        query = SearchQuery(
            q=args.query,
            type=args.type,
            license=args.license,
            family=args.family,
            contributor=args.contributor,
            product_type=args.product_type,
            limit=args.limit,
            offset=args.offset,
        )
    except ValidationError as exc:
        for problem in describe_errors(exc):
            print(f"ingest search: {problem}", file=sys.stderr)
        return 2
    connection = await connect(settings.database_url)
    try:
        results = await search(connection, query)
    finally:
        await connection.close()
    if args.json:
        print(results.model_dump_json(indent=2))
    else:
        print(format_results(results))
    if not results.total:
        print("no match", file=sys.stderr)
    return 0 if results.total else 1


def format_results(results: SearchResults) -> str:
    query = results.query
    first = query.offset + 1 if results.hits else 0
    lines = [
        f"{results.total} match(es) for {query.q!r}"
        + (f", showing {first}–{query.offset + len(results.hits)}" if results.total else "")
    ]
    for hit in results.hits:
        where = (
            f"{hit.image_path} in {hit.set_title!r}, " if hit.type == "icon" else ""
        ) + f"{hit.family}, {hit.license}, by {hit.contributor}"
        lines.append(f"  {hit.type:<4}  {hit.rank:6.3f}  {hit.title}  ({where})")
        lines.append(f"              product {hit.product_id}" + _id_of_image(hit.image_id))
    for name in FACETS:
        counts = results.facets.get(name) or []
        if counts:
            shown = ", ".join(f"{c.value} {c.count}" for c in counts)
            lines.append(f"{name + ':':<14}{shown}")
    return "\n".join(lines)


def _id_of_image(image_id: Any) -> str:
    return "" if image_id is None else f", image {image_id}"


async def cmd_reindex(args: argparse.Namespace, settings: CliSettings) -> int:
    connection = await connect(settings.database_url)
    try:
        done = await reindex(connection)
    finally:
        await connection.close()
    print(
        f"reindexed {done.products} product(s): {done.searchable} searchable, {done.icons} icon(s)"
    )
    return 0


def add_search_commands(commands: Any) -> None:
    """`search` and `reindex`, on the `ingest` command's subparsers."""
    parser = commands.add_parser(
        "search",
        help="search sets and icons (typos, prefixes, t-rex = t rex), with facets",
        description=(
            "Words match titles, tags, families, licenses and descriptions; a word is also "
            "a prefix, a misspelt word matches its nearest indexed words, -word excludes."
        ),
    )
    parser.add_argument("query", nargs="?", default="", help="words (empty: browse)")
    parser.add_argument("--type", choices=["icon", "set"], help="only icons or only sets")
    parser.add_argument("--license", help="e.g. apache-2.0")
    parser.add_argument("--family", help="a family's slug")
    parser.add_argument("--contributor", help="a contributor")
    parser.add_argument("--product-type", help="icon_set or illustration_set")
    parser.add_argument("--limit", type=int, default=10, help=f"hits per page (1 to {MAX_LIMIT})")
    parser.add_argument("--offset", type=int, default=0, help=f"hits to skip (0 to {MAX_OFFSET})")
    parser.add_argument("--json", action="store_true", help="the results as JSON")
    parser.set_defaults(run=cmd_search)
    commands.add_parser(
        "reindex", help="rewrite every product's search rows and the typo vocabulary"
    ).set_defaults(run=cmd_reindex)
