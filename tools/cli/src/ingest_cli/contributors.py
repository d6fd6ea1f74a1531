"""`ingest contributors`: who may use the HTTP API, and with which keys.

`create NAME` makes a key for the contributor NAME (the folder of their uploads,
uploads/NAME/; created if new) and prints it once: only its hash is stored. `list` shows
every key by its prefix, with when it was made, last used and revoked. `revoke` takes a
key's prefix (or the key, or its id); the key stops working at once.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from ingest_common.apikeys import (
    UnknownKey,
    contributor_problem,
    contributors_without_keys,
    create_key,
    list_keys,
    revoke_key,
)
from ingest_common.db.pool import connect

from ingest_cli.settings import CliSettings


def add_contributors_command(commands: Any) -> None:
    """Register `ingest contributors create|list|revoke` on `ingest`'s subparsers."""
    contributors = commands.add_parser("contributors", help="contributors and their API keys")
    actions = contributors.add_subparsers(dest="contributors_action", required=True)
    create = actions.add_parser(
        "create",
        help="make an API key for a contributor (created if new); the key is shown once",
    )
    create.add_argument("name", help="the contributor: the folder of their uploads, uploads/NAME/")
    create.set_defaults(run=cmd_create)
    listing = actions.add_parser("list", help="every key: prefix, created, last used, revoked")
    listing.add_argument("name", nargs="?", help="only this contributor's keys")
    listing.set_defaults(run=cmd_list)
    revoke = actions.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key", help="the key's prefix as `list` shows it (or the key, or its id)")
    revoke.set_defaults(run=cmd_revoke)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def cmd_create(args: argparse.Namespace, settings: CliSettings) -> int:
    if problem := contributor_problem(args.name):
        print(problem, file=sys.stderr)
        return 2
    connection = await connect(settings.database_url)
    try:
        key, secret = await create_key(connection, args.name)
    finally:
        await connection.close()
    print(secret)
    print(
        f"key {key.prefix} (id {key.id}) for contributor {key.contributor}: store it now, it"
        " is not shown again. Send it as 'Authorization: Bearer <key>'.",
        file=sys.stderr,
    )
    return 0


async def cmd_list(args: argparse.Namespace, settings: CliSettings) -> int:
    connection = await connect(settings.database_url)
    try:
        keys = await list_keys(connection, args.name)
        keyless = [] if args.name else await contributors_without_keys(connection)
    finally:
        await connection.close()
    print(
        f"{'contributor':<20} {'prefix':<12} {'created':<19}  {'last used':<19}  "
        f"{'revoked':<19}  id"
    )
    for key in keys:
        print(
            f"{key.contributor:<20} {key.prefix:<12} {_when(key.created_at):<19}  "
            f"{_when(key.last_used_at):<19}  {_when(key.revoked_at):<19}  {key.id}"
        )
    for name in keyless:
        print(f"{name:<20} (no key)")
    active = sum(key.revoked_at is None for key in keys)
    print(f"{len(keys)} key(s), {active} active", file=sys.stderr)
    return 0


async def cmd_revoke(args: argparse.Namespace, settings: CliSettings) -> int:
    connection = await connect(settings.database_url)
    try:
        key = await revoke_key(connection, args.key)
    except UnknownKey:
        print(
            f"no key {args.key!r} (`ingest contributors list` shows the prefixes)", file=sys.stderr
        )
        return 1
    finally:
        await connection.close()
    print(f"revoked {key.prefix} of {key.contributor} (at {_when(key.revoked_at)})")
    return 0
