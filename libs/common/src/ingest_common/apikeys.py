"""Contributors' API keys: made by `ingest contributors create`, checked by the HTTP API.

A key is `ik_` and 43 characters of URL-safe base64 (256 random bits). Only its sha256 is
stored, with its first characters (`prefix`, shown to tell keys apart, and how a presented
key is found); a presented key is compared with the stored hash in constant time. A key
is shown once, when it is made; a lost key is revoked and replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingest_common.db.pool import Connection

KEY_MARK = "ik_"
PREFIX_LENGTH = len(KEY_MARK) + 8  # "ik_" and 48 bits: unique in practice, retried if not
# A contributor's name is the slug of its uploads' prefix uploads/<contributor>/ (the
# batcher's rule, ingest_batcher.keys; a test keeps the two in step).
CONTRIBUTOR_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
LAST_USED_RESOLUTION = 60.0  # seconds: last_used_at is written at most this often per key


@dataclass(frozen=True)
class ApiKey:
    id: uuid.UUID
    contributor: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class UnknownKey(LookupError):
    pass


def new_key() -> str:
    return KEY_MARK + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def looks_like_a_key(key: str) -> bool:
    return key.startswith(KEY_MARK) and len(key) > PREFIX_LENGTH and len(key) <= 128


def contributor_problem(name: str) -> str | None:
    """Why `name` cannot be a contributor's name; None if it can."""
    if CONTRIBUTOR_NAME.fullmatch(name):
        return None
    return (
        f"{name!r} cannot be a contributor's name: 1-63 lowercase letters, digits, '-' or '_',"
        " starting with a letter or digit (it is the folder of their uploads, uploads/<name>/)"
    )


_COLUMNS = "id, contributor_id, prefix, created_at, revoked_at, last_used_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        contributor=row["contributor_id"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


async def create_key(connection: Connection, contributor: str) -> tuple[ApiKey, str]:
    """A new key for `contributor` (created if new): the row and the key, shown only now."""
    if problem := contributor_problem(contributor):
        raise ValueError(problem)
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO contributors (id) VALUES ($1) ON CONFLICT DO NOTHING", contributor
        )
        while True:
            key = new_key()
            row = await connection.fetchrow(
                f"""INSERT INTO api_keys (id, contributor_id, prefix, hash)
                    VALUES ($1, $2, $3, $4) ON CONFLICT (prefix) DO NOTHING
                    RETURNING {_COLUMNS}""",
                uuid.uuid4(),
                contributor,
                key_prefix(key),
                key_hash(key),
            )
            if row is not None:
                return _key(row), key


async def list_keys(connection: Connection, contributor: str | None = None) -> list[ApiKey]:
    rows = await connection.fetch(
        f"""SELECT {_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR contributor_id = $1
             ORDER BY contributor_id, created_at""",
        contributor,
    )
    return [_key(row) for row in rows]


async def contributors_without_keys(connection: Connection) -> list[str]:
    rows = await connection.fetch(
        """SELECT id FROM contributors c
            WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.contributor_id = c.id)
            ORDER BY id"""
    )
    return [row["id"] for row in rows]


async def revoke_key(connection: Connection, prefix_or_id: str) -> ApiKey:
    """Revoke the key with this prefix (or a key itself: its prefix) or id; revoking a
    revoked key changes nothing. Raises UnknownKey if there is none."""
    try:
        by_id: uuid.UUID | None = uuid.UUID(prefix_or_id)
    except ValueError:
        by_id = None
    prefix = key_prefix(prefix_or_id) if by_id is None else None
    row = await connection.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
             WHERE id = $1 OR prefix = $2 RETURNING {_COLUMNS}""",
        by_id,
        prefix,
    )
    if row is None:
        raise UnknownKey(prefix_or_id)
    return _key(row)


async def authenticate(connection: Connection, key: str) -> str | None:
    """The contributor whose valid (unrevoked) key this is; None for any other string."""
    if not looks_like_a_key(key):
        return None
    row = await connection.fetchrow(
        """SELECT id, contributor_id, hash, revoked_at,
                  last_used_at IS NULL
                  OR last_used_at < now() - make_interval(secs => $2) AS stale
             FROM api_keys WHERE prefix = $1""",
        key_prefix(key),
        LAST_USED_RESOLUTION,
    )
    if row is None:
        hmac.compare_digest(key_hash(key), key_hash(key))  # the same work either way
        return None
    if not hmac.compare_digest(row["hash"], key_hash(key)) or row["revoked_at"] is not None:
        return None
    if row["stale"]:
        await connection.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = $1", row["id"]
        )
    contributor: str = row["contributor_id"]
    return contributor
