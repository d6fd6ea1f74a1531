"""Querying: one `search` for the HTTP API and `ingest search`.

Matches are sets and icons whose tsvector matches the query (see `text` for typos,
hyphens and prefixes). Facets count the whole match, each with every filter applied but its
own (picking a license still shows the other licenses' counts); hits and `total` have
every filter applied. Pagination is limit/offset, capped (MAX_LIMIT, MAX_OFFSET).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from ingest_common.db.pool import Connection
from ingest_common.search.text import parse_query, tsquery

MAX_LIMIT = 100
MAX_OFFSET = 1000
MAX_QUERY_LENGTH = 200
FACET_VALUES = 20  # the most frequent values shown per facet
FUZZY_SIMILARITY = 0.4  # trigram similarity of a typo to the word it stands for
FUZZY_CANDIDATES = 3  # vocabulary words a typo may stand for

FACETS = ("type", "product_type", "license", "family", "contributor")


def _blank_is_none(value: object) -> object:
    if isinstance(value, str):
        value = value.strip().lower()
        return value or None
    return value


Filter = Annotated[Annotated[str, Field(max_length=100)] | None, BeforeValidator(_blank_is_none)]


class SearchQuery(BaseModel):
    """What to search: words (`q`, may be empty to browse), filters, a page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    q: str = Field("", description="words to find; a leading - excludes a word")
    type: Annotated[Literal["icon", "set"] | None, BeforeValidator(_blank_is_none)] = None
    license: Filter = None
    family: Filter = None
    contributor: Filter = None
    product_type: Filter = None
    limit: int = 20
    offset: int = 0

    @field_validator("q")
    @classmethod
    def _q(cls, value: str) -> str:
        value = " ".join(value.split())
        if len(value) > MAX_QUERY_LENGTH:
            raise ValueError(f"the query is {len(value)} characters; at most {MAX_QUERY_LENGTH}")
        return value

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: int) -> int:
        if not 1 <= value <= MAX_LIMIT:
            raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, not {value}")
        return value

    @field_validator("offset")
    @classmethod
    def _offset(cls, value: int) -> int:
        if not 0 <= value <= MAX_OFFSET:
            raise ValueError(
                f"offset must be from 0 to {MAX_OFFSET}, not {value}"
                " (narrow the search with words or filters to see further)"
            )
        return value


def describe_errors(error: ValidationError) -> list[str]:
    """A person's reading of a query's validation errors: "limit: limit must be from ...".
    The HTTP API returns these with its 400."""
    described = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "query"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown parameter (known: {', '.join(SearchQuery.model_fields)})"
        described.append(f"{where}: {message}")
    return described


class SearchHit(BaseModel):
    type: Literal["icon", "set"]
    product_id: uuid.UUID
    title: str
    family: str
    contributor: str
    license: str
    product_type: str
    rank: float
    set_title: str  # the set's title (an icon's set; a set's own)
    image_id: uuid.UUID | None = None  # icons
    image_path: str | None = None  # icons: the file's name in the set
    # icons: the key prefix of its renditions (renditions/<image>/<profile>/); sets: the
    # cover's key (the first image's largest PNG)
    renditions: str | None = None
    family_preview_key: str | None = None  # the family's mosaic (PNG)


class FacetCount(BaseModel):
    value: str
    count: int


class SearchResults(BaseModel):
    query: SearchQuery
    total: int
    hits: list[SearchHit]
    facets: dict[str, list[FacetCount]]


# Each filter, on a row of `matches`; its parameter is formatted in.
_FILTERS = {
    "type": "m.type = {}",
    "product_type": "m.product_type = {}",
    "license": "m.license = {}",
    "family": "m.family = {}",
    "contributor": "m.contributor = {}",
}

_BRANCH = """
    SELECT {type} AS type, {t}.product_id, {image_id} AS image_id, {position} AS position,
           {t}.title, {t}.family, {t}.contributor_id AS contributor, {t}.license,
           {t}.product_type, {rank} AS rank
      FROM {table} {t}{where}"""

# ts_rank's weights {D, C, B, A}: five times apart, so that no number of matches in one
# field outranks one match in the field above (ts_rank's repeats add up to < 1.65 × one).
_WEIGHTS = "'{0.01, 0.05, 0.25, 1.0}'"

_ORDER = "rank DESC, type DESC, lower(title), product_id, position"

_SEARCH = """
WITH q AS (SELECT to_tsquery('english', $1) AS query, to_tsquery('english', $2) AS exact,
                  to_tsquery('english', $3) AS excluded),
matches AS MATERIALIZED ({sets}
    UNION ALL{icons}
),
page AS (
    SELECT * FROM matches m WHERE {filtered} ORDER BY {order} LIMIT $4 OFFSET $5
)
SELECT (SELECT count(*) FROM matches m WHERE {filtered}) AS total,
       (SELECT coalesce(jsonb_agg(f), '[]') FROM ({facets}) f) AS facets,
       (SELECT coalesce(jsonb_agg(h ORDER BY {order}), '[]') FROM (
            SELECT page.*, p.title AS set_title, i.path AS image_path,
                   fp.png_key AS family_preview_key,
                   CASE WHEN page.image_id IS NULL THEN cover.key
                        ELSE regexp_replace(icon.key, '[^/]*$', '') END AS renditions
              FROM page
              JOIN products p ON p.id = page.product_id
              LEFT JOIN images i ON i.id = page.image_id
              LEFT JOIN family_previews fp ON fp.family_id = p.family_id
              LEFT JOIN LATERAL (
                   SELECT r->>'key' AS key FROM jsonb_array_elements(i.renditions) r LIMIT 1
              ) icon ON page.image_id IS NOT NULL
              LEFT JOIN LATERAL (
                   SELECT r->>'key' AS key
                     FROM images c, jsonb_array_elements(c.renditions) r
                    WHERE c.product_id = page.product_id AND c.status = 'ready'
                      AND r->>'format' = 'png'
                    ORDER BY c.position, (r->>'width')::int DESC LIMIT 1
              ) cover ON page.image_id IS NULL
       ) h) AS hits
"""

_FACET = """
    (SELECT '{name}' AS facet, m.{name} AS value, count(*) AS count
       FROM matches m WHERE {others}
      GROUP BY m.{name} ORDER BY count(*) DESC, m.{name} LIMIT {most})"""

# Per query word: whether a vocabulary word starts with it (being typed: no typo), and the
# vocabulary words nearest to it. One branch per word, each with its own parameter, so that
# both lookups are index scans (the primary key's range, the trigram GiST's nearest).
_SIMILAR = f"""
SELECT {{i}} AS i,
       EXISTS (SELECT 1 FROM search_words w
                WHERE w.word >= ${{n}}::text AND w.word < ${{n}}::text || chr(1114111)) AS known,
       array(SELECT near.word FROM (
                 SELECT w.word, similarity(w.word, ${{n}}::text) AS similarity
                   FROM search_words w
                  WHERE w.word % ${{n}}::text
                  ORDER BY w.word <-> ${{n}}::text  -- nearest first, by the GiST index
                  LIMIT {FUZZY_CANDIDATES}) near
              WHERE near.similarity >= {FUZZY_SIMILARITY}) AS similar"""


async def similar_words(connection: Connection, candidates: list[str]) -> dict[str, list[str]]:
    """The vocabulary words each candidate may be a typo of: none for a word that starts a
    vocabulary word (it is being typed, or it is right)."""
    if not candidates:
        return {}
    sql = " UNION ALL".join(_SIMILAR.format(i=i, n=i + 1) for i in range(len(candidates)))
    return {
        candidates[row["i"]]: list(row["similar"])
        for row in await connection.fetch(sql, *candidates)
        if not row["known"]
    }


async def search(connection: Connection, query: SearchQuery) -> SearchResults:
    """Sets and icons matching `query`, best first, with the facets of the whole match."""
    parsed = parse_query(query.q)
    similar = await similar_words(connection, parsed.fuzzy_candidates)
    text_query, exact_query = tsquery(parsed, similar), tsquery(parsed)
    if query.q and not text_query:
        # Only signs, or only excluded words: nothing to find (not everything).
        return SearchResults(query=query, total=0, hits=[], facets={f: [] for f in FACETS})
    excluded = " | ".join(parsed.exclude)
    sql, arguments = build_search_sql(query, text_query, exact_query, excluded)
    row = await connection.fetchrow(sql, *arguments)
    assert row is not None
    facets: dict[str, list[FacetCount]] = {name: [] for name in FACETS}
    for facet in row["facets"]:
        facets[facet["facet"]].append(FacetCount(value=facet["value"], count=facet["count"]))
    return SearchResults(
        query=query,
        total=row["total"],
        hits=[SearchHit.model_validate(hit) for hit in row["hits"]],
        facets=facets,
    )


def build_search_sql(
    query: SearchQuery, text_query: str, exact_query: str, excluded: str = ""
) -> tuple[str, list[Any]]:
    """The statement and its arguments. Only placeholders are formatted into the SQL.
    `text_query` finds and ranks, `exact_query` (no typo alternatives) ranks exact matches
    higher, `excluded` (words) removes."""
    arguments: list[Any] = [
        text_query or None,
        exact_query or None,
        excluded or None,
        query.limit,
        query.offset,
    ]
    conditions: dict[str, str] = {}
    for name, template in _FILTERS.items():
        value = getattr(query, name)
        if value is not None:
            arguments.append(value)
            conditions[name] = template.format(f"${len(arguments)}")

    def both(names: list[str]) -> str:
        return " AND ".join(conditions[n] for n in names) or "true"

    def branch(kind: str, table: str, t: str) -> str:
        vector = f"{t}.search_vector"
        return _BRANCH.format(
            type=f"'{kind}'::text",
            t=t,
            table=table,
            image_id=f"{t}.image_id" if kind == "icon" else "NULL::uuid",
            position=f"{t}.position" if kind == "icon" else "0",
            rank=(
                f"ts_rank({_WEIGHTS}, {vector}, q.query) + ts_rank({_WEIGHTS}, {vector}, q.exact)"
                if text_query
                else "0::real"
            ),
            # the query inline (not q.query): a condition on the table, the GIN index's
            where=(
                f", q WHERE {vector} @@ to_tsquery('english', $1)"
                + (f" AND NOT {vector} @@ q.excluded" if excluded else "")
                if text_query
                else ""
            ),
        )

    facets = " UNION ALL".join(
        _FACET.format(
            name=name, others=both([n for n in conditions if n != name]), most=FACET_VALUES
        )
        for name in FACETS
    )
    sql = _SEARCH.format(
        sets=branch("set", "search_documents", "sd"),
        icons=branch("icon", "search_icons", "si"),
        filtered=both(list(conditions)),
        order=_ORDER,
        facets=facets,
    )
    return sql, arguments
