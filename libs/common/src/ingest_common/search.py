"""Search: the product document and the backends that index and query it.

PostgreSQL full-text search is the default backend (no extra service to run); the
`SearchBackend` protocol is the seam for OpenSearch at scale.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from ingest_common.db.pool import Connection


@dataclass(frozen=True)
class SearchHit:
    product_id: uuid.UUID
    title: str
    family: str
    rank: float
    document: dict[str, Any]
    family_preview_key: str | None


class SearchBackend(Protocol):
    async def upsert(self, document: dict[str, Any]) -> None: ...

    async def delete(self, product_id: uuid.UUID) -> None: ...

    async def search(self, query: str, limit: int = 10) -> list[SearchHit]: ...


async def product_document(connection: Connection, product: uuid.UUID) -> dict[str, Any] | None:
    """The indexable document of a product, from the `product_documents` view."""
    row = await connection.fetchrow(
        "SELECT * FROM product_documents WHERE product_id = $1", product
    )
    if row is None:
        return None
    document = dict(row)
    document["product_id"] = str(document["product_id"])
    return document


# Weights: title A, tags and family B, description C, the images' titles and tags D.
_UPSERT = """
INSERT INTO search_documents (product_id, title, family, document, search_vector, indexed_at)
VALUES ($1, $2, $3, $4,
        setweight(to_tsvector('english', $2), 'A')
     || setweight(to_tsvector('english', array_to_string($5::text[], ' ') || ' ' || $3 || ' '
                                          || $6), 'B')
     || setweight(to_tsvector('english', $7), 'C')
     || setweight(to_tsvector('english', $8), 'D'),
        now())
ON CONFLICT (product_id) DO UPDATE
   SET title = EXCLUDED.title, family = EXCLUDED.family, document = EXCLUDED.document,
       search_vector = EXCLUDED.search_vector, indexed_at = now()
"""

# The family mosaic is joined live rather than copied into every document: one new set
# would otherwise mean reindexing every product of its family.
_SEARCH = """
SELECT sd.product_id, sd.title, sd.family, sd.document, fp.png_key AS family_preview_key,
       ts_rank_cd(sd.search_vector, query, 32) AS rank
  FROM search_documents sd
  JOIN products p ON p.id = sd.product_id
  LEFT JOIN family_previews fp ON fp.family_id = p.family_id,
       websearch_to_tsquery('english', $1) query
 WHERE sd.search_vector @@ query
 ORDER BY rank DESC, sd.indexed_at DESC
 LIMIT $2
"""


class PostgresSearch:
    """Full-text search in PostgreSQL: a weighted tsvector per product, GIN-indexed."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def upsert(self, document: dict[str, Any]) -> None:
        await self.connection.execute(
            _UPSERT,
            uuid.UUID(document["product_id"]),
            document["title"],
            document["family"],
            document,
            list(document["tags"]),
            document.get("family_name") or "",
            document.get("description") or "",
            " ".join([*document.get("image_titles", []), *document.get("image_tags", [])]),
        )

    async def delete(self, product_id: uuid.UUID) -> None:
        await self.connection.execute(
            "DELETE FROM search_documents WHERE product_id = $1", product_id
        )

    async def search(self, query: str, limit: int = 10) -> list[SearchHit]:
        rows = await self.connection.fetch(_SEARCH, query, limit)
        return [
            SearchHit(
                row["product_id"],
                row["title"],
                row["family"],
                row["rank"],
                row["document"],
                row["family_preview_key"],
            )
            for row in rows
        ]
