"""How search folds text and builds queries (pure: no database)."""

from __future__ import annotations

import pytest
from ingest_common.search import SearchQuery, describe_errors
from ingest_common.search.query import build_search_sql
from ingest_common.search.text import (
    ParsedQuery,
    fold,
    index_text,
    parse_query,
    tsquery,
    vocabulary,
)
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("T-Rex", "t rex"),
        ("  T  Rex ", "t rex"),
        ("Crème Brûlée", "creme brulee"),
        ("apache-2.0", "apache 2 0"),
        ("Straße", "strasse"),
        ("flashlight.svg", "flashlight svg"),
        ("a_b/c", "a b c"),
        ("—", ""),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_index_text_joins_neighbours_within_a_text_only() -> None:
    assert index_text("T-Rex skull") == "t rex skull trex rexskull"
    assert index_text("T Rex", "bones") == "t rex trex bones"
    assert index_text("Bones of the sea", pairs=False) == "bones of the sea"


def test_vocabulary_keeps_words_worth_proposing() -> None:
    assert vocabulary(["t rex trex 2 0 apache 100 ab"]) == {"rex", "trex", "apache", "ab"}


def test_parse_query_splits_signs_and_reads_exclusions() -> None:
    assert parse_query("t-rex -Skull") == ParsedQuery(("t", "rex"), ("skull",))
    assert parse_query('"harbour"  lights') == ParsedQuery(("harbour", "lights"), ())
    assert parse_query("-") == ParsedQuery((), ())
    assert len(parse_query(" ".join(["w"] * 20)).include) == 8
    assert parse_query("t rex flashlight").fuzzy_candidates == ["rex", "flashlight"]


def test_tsquery_prefixes_typos_and_joined_words() -> None:
    assert tsquery(parse_query("flash")) == "flash:*"
    assert tsquery(parse_query("materal"), {"materal": ["material", "mater"]}) == (
        "(materal:* | material | mater)"
    )
    assert tsquery(parse_query("t-rex")) == "(t:* & rex:*) | (trex:*)"
    assert tsquery(parse_query("a b c")) == "(a:* & b:* & c:*) | (ab:* & c:*) | (a:* & bc:*)"
    assert tsquery(parse_query("-only")) == ""
    assert tsquery(parse_query("harbour -boats")) == "harbour:*"  # exclusions go apart


def test_the_sql_takes_values_as_parameters_only() -> None:
    query = SearchQuery(q="x", license="MIT'; DROP TABLE images; --", family="f")
    sql, arguments = build_search_sql(query, "x:*", "x:*")
    assert "DROP" not in sql
    assert arguments[5:] == ["mit'; drop table images; --", "f"]
    assert "m.license = $6" in sql
    assert "m.family = $7" in sql


def test_query_defaults_normalise_and_refuse_clearly() -> None:
    query = SearchQuery(q="  t   rex ", license=" Apache-2.0 ", family="", type="")
    assert (query.q, query.license, query.family, query.type) == ("t rex", "apache-2.0", None, None)
    assert (query.limit, query.offset) == (20, 0)
    with pytest.raises(ValidationError) as raised:
        SearchQuery(limit=1000, offset=5000, family="x" * 101)
    assert describe_errors(raised.value) == [
        "family: String should have at most 100 characters",
        "limit: limit must be from 1 to 100, not 1000",
        "offset: offset must be from 0 to 1000, not 5000 (narrow the search with words or"
        " filters to see further)",
    ]
    with pytest.raises(ValidationError):
        query.model_copy(update={"limit": 5}).__setattr__("limit", 6)
