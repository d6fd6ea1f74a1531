"""Indexing: a product's document → its set row, its icon rows and the vocabulary.

Weights (ranking title > tags > family > description):
  set   A title, B tags, C family (slug and name), D description, license, its icons' titles
        and tags (so a set is found by what it contains, below what it is called)
  icon  A title, B tags and file name, C family, D its set's title and tags, license
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ingest_common.db.pool import Connection
from ingest_common.search.query import SearchHit, SearchQuery, search
from ingest_common.search.text import index_text, vocabulary

_VECTOR = """setweight(to_tsvector('english', {a}), 'A')
          || setweight(to_tsvector('english', {b}), 'B')
          || setweight(to_tsvector('english', {c}), 'C')
          || setweight(to_tsvector('english', {d}), 'D')"""

_UPSERT_SET = f"""
INSERT INTO search_documents (product_id, title, family, document, contributor_id, license,
                              product_type, search_vector, indexed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, {_VECTOR.format(a="$8", b="$9", c="$10", d="$11")}, now())
ON CONFLICT (product_id) DO UPDATE
   SET title = EXCLUDED.title, family = EXCLUDED.family, document = EXCLUDED.document,
       contributor_id = EXCLUDED.contributor_id, license = EXCLUDED.license,
       product_type = EXCLUDED.product_type, search_vector = EXCLUDED.search_vector,
       indexed_at = now()
"""

_INSERT_ICONS = f"""
INSERT INTO search_icons (image_id, product_id, position, title, path, family, contributor_id,
                          license, product_type, search_vector)
SELECT i.id, $1, i.position, i.title, i.path, $2, $3, $4, $5,
       {_VECTOR.format(a="i.a", b="i.b", c="$6", d="$7")}
  FROM unnest($8::uuid[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[])
       AS i (id, position, title, path, a, b)
"""

# The document (the view's row) and its icons, read in one statement: one snapshot.
_DOCUMENT_AND_ICONS = """
SELECT d.*,
       array(SELECT row(i.id, i.position, i.path, i.title, i.tags)
               FROM images i WHERE i.product_id = d.product_id AND i.status = 'ready'
              ORDER BY i.position, i.id) AS icons
  FROM product_documents d
 WHERE d.product_id = $1
"""


@dataclass(frozen=True)
class Icon:
    image_id: uuid.UUID
    position: int
    path: str
    title: str
    tags: list[str]


@dataclass(frozen=True)
class Indexed:
    document: dict[str, Any]
    searchable: bool  # False: nothing of it is ready, so it is not in search
    changed: bool  # the set or its icons were written (or removed) just now


def _as_document(row: Any) -> dict[str, Any]:
    document = dict(row)
    document.pop("icons", None)
    document["product_id"] = str(document["product_id"])
    return document


async def product_document(connection: Connection, product: uuid.UUID) -> dict[str, Any] | None:
    """The indexable document of a product, from the `product_documents` view."""
    row = await connection.fetchrow(
        "SELECT * FROM product_documents WHERE product_id = $1", product
    )
    return None if row is None else _as_document(row)


async def index_product(
    connection: Connection, product: uuid.UUID, *, force: bool = False
) -> Indexed | None:
    """Bring search up to date with a product (None: no such product), in the caller's
    transaction. Written only when its document changed (or with `force`); a product with
    nothing ready is removed, icons included."""
    # One indexing of a product at a time; what it reads is read after the lock, so the
    # later of two concurrent runs writes the later state.
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('ingest.search:' || $1::uuid::text, 0))",
        product,
    )
    row = await connection.fetchrow(_DOCUMENT_AND_ICONS, product)
    if row is None:
        return None
    document = _as_document(row)
    icons = [Icon(*icon) for icon in row["icons"]]
    before = await connection.fetchval(
        "SELECT document FROM search_documents WHERE product_id = $1", product
    )
    searchable = document["images_ready"] > 0
    if before == (document if searchable else None) and not force:
        return Indexed(document, searchable, changed=False)
    backend = PostgresSearch(connection)
    if searchable:
        await backend.upsert(document, icons)
    else:
        await backend.delete(product)
    return Indexed(document, searchable, changed=True)


def _file_name(icon: Icon) -> str:
    """The file's name when it says more than the title ("ab-testing.svg": nothing more)."""
    stem = PurePosixPath(icon.path).stem
    return "" if index_text(stem) == index_text(icon.title) else stem


class PostgresSearch:
    """Search in PostgreSQL: a weighted tsvector per set and per icon (GIN), a trigram-indexed
    vocabulary for typos. The seam for another backend (OpenSearch) at scale."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def upsert(self, document: dict[str, Any], icons: list[Icon]) -> None:
        """Write a set's row and replace its icons' rows (the caller holds its transaction)."""
        product = uuid.UUID(document["product_id"])
        family = index_text(document["family"], document.get("family_name") or "")
        license_ = index_text(document["license"])
        tags = index_text(*document["tags"])
        set_text = {
            "a": index_text(document["title"]),
            "b": tags,
            "c": family,
            "d": " ".join(
                [
                    index_text(document.get("description") or "", pairs=False),
                    license_,
                    index_text(*(icon.title for icon in icons)),
                    index_text(*{t for icon in icons for t in icon.tags}),
                ]
            ),
        }
        await self.connection.execute(
            _UPSERT_SET,
            product,
            document["title"],
            document["family"],
            document,
            document["contributor_id"],
            document["license"],
            document["product_type"],
            *set_text.values(),
        )
        await self.connection.execute("DELETE FROM search_icons WHERE product_id = $1", product)
        icon_a = [index_text(icon.title) for icon in icons]
        icon_b = [index_text(*icon.tags, _file_name(icon)) for icon in icons]
        await self.connection.execute(
            _INSERT_ICONS,
            product,
            document["family"],
            document["contributor_id"],
            document["license"],
            document["product_type"],
            family,
            f"{set_text['a']} {tags} {license_}",
            [icon.image_id for icon in icons],
            [icon.position for icon in icons],
            [icon.title for icon in icons],
            [icon.path for icon in icons],
            icon_a,
            icon_b,
        )
        words = vocabulary([*set_text.values(), *icon_a, *icon_b])
        await self.connection.execute(
            "INSERT INTO search_words (word) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            sorted(words),
        )

    async def search(self, q: str, limit: int = 10) -> list[SearchHit]:
        """The sets matching `q`, best first: the short form of `search` for scripts."""
        return (await search(self.connection, SearchQuery(q=q, type="set", limit=limit))).hits

    async def delete(self, product_id: uuid.UUID) -> None:
        """Remove a set from search, its icons with it."""
        await self.connection.execute(
            "DELETE FROM search_documents WHERE product_id = $1", product_id
        )


@dataclass(frozen=True)
class Reindexed:
    products: int
    searchable: int
    icons: int


async def reindex(connection: Connection) -> Reindexed:
    """Rewrite every product's search rows and the vocabulary (`ingest reindex`): after a
    migration that changes how search is built, or to drop words nothing uses any more.
    One transaction per product: search keeps answering meanwhile (typos are matched
    against a vocabulary that refills as it goes). No event: the products did not change."""
    await connection.execute("DELETE FROM search_words")
    products = [r["id"] for r in await connection.fetch("SELECT id FROM products ORDER BY id")]
    searchable = 0
    for product in products:
        async with connection.transaction():
            indexed = await index_product(connection, product, force=True)
            searchable += bool(indexed and indexed.searchable)
    icons = await connection.fetchval("SELECT count(*) FROM search_icons")
    return Reindexed(len(products), searchable, icons)
