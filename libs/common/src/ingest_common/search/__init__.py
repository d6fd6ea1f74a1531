"""Search: sets and icons, in PostgreSQL.

- `search(connection, SearchQuery(...)) -> SearchResults`: the one query, shared by the HTTP
  API and `ingest search` (ingest_common.search.query).
- `index_product(connection, product_id)`: the indexer's one step, also `ingest reindex`'s
  (ingest_common.search.index): a product's document → its set row and its icons' rows.
- How text is folded, indexed and queried: ingest_common.search.text.

PostgreSQL full-text search (weighted tsvectors, GIN) with pg_trgm for typos is the default
backend (no extra service to run); `PostgresSearch` is the seam for OpenSearch at scale.
"""

from __future__ import annotations

from ingest_common.search.index import (
    Icon,
    Indexed,
    PostgresSearch,
    Reindexed,
    index_product,
    product_document,
    reindex,
)
from ingest_common.search.query import (
    FACETS,
    MAX_LIMIT,
    MAX_OFFSET,
    FacetCount,
    SearchHit,
    SearchQuery,
    SearchResults,
    describe_errors,
    search,
)

__all__ = [
    "FACETS",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "FacetCount",
    "Icon",
    "Indexed",
    "PostgresSearch",
    "Reindexed",
    "SearchHit",
    "SearchQuery",
    "SearchResults",
    "describe_errors",
    "index_product",
    "product_document",
    "reindex",
    "search",
]
