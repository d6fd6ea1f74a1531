"""Search on real PostgreSQL, fed by the real pipeline: icons and sets, typos, hyphens,
prefixes, licenses, facets, filters, pagination, ranking, the indexer's upkeep, the CLI."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.schemas.messages import IndexProduct
from ingest_common.search import (
    MAX_LIMIT,
    MAX_OFFSET,
    SearchQuery,
    SearchResults,
    describe_errors,
    search,
)
from ingest_common.settings import IngestSettings
from pydantic import ValidationError

from tests.integration.pipeline import (
    Pipeline,
    make_zip,
    manifest,
    mdi_set,
    put_upload,
    run_ingest,
    svgs,
    upload_folder,
)

MDI_TITLE = "Material Design Essentials"
MDI_ICONS = 15  # its first 15 files: a flashlight and a lightbulb among them


@dataclass(frozen=True)
class Corpus:
    sets: int
    icons: int


def _files(titles: dict[str, str], tags: list[str]) -> tuple[dict[str, bytes], list[Any]]:
    data = svgs(len(titles))
    entries = [
        {"path": path, "title": title, "tags": tags}
        for path, title in zip(data, titles.values(), strict=True)
    ]
    return data, entries


async def _put_set(aws: Aws, contributor: str, name: str, count: int, **fields: Any) -> None:
    data = svgs(count)
    body = manifest(list(data), **fields)
    await put_upload(aws, contributor, make_zip({"manifest.json": body, **data}), name)


@pytest.fixture
async def corpus(aws: Aws, db: asyncpg.Pool, tmp_path: Path) -> Corpus:
    """The real Material Design sample (acme, apache-2.0, 15 icons with a flashlight), a set
    of dinosaurs (bob, mit, an illustration set) and four sets that say "harbour" in one
    place each: title, tags, family, description."""
    await upload_folder(aws, mdi_set(tmp_path / "mdi", MDI_ICONS), "acme")
    data, entries = _files({"a": "T-Rex skull", "b": "Raptor claw"}, ["fossil"])
    body = manifest(
        list(data),
        title="T Rex Skeletons",
        family="dinosaurs",
        family_name="Dinosaurs",
        product_type="illustration_set",
        license="mit",
        description="Bones of the Cretaceous",
        tags=["fossil", "museum"],
    )
    body = json.dumps({**json.loads(body), "files": entries})
    await put_upload(aws, "bob", make_zip({"manifest.json": body, **data}), "trex.zip")
    plain = {"description": "Icons for tests", "tags": ["test"]}
    harbour: list[dict[str, Any]] = [
        {**plain, "title": "Harbour lights"},
        {**plain, "title": "Boats", "tags": ["harbour"]},
        {**plain, "title": "Ships", "family": "harbour-fleet", "family_name": "Harbour fleet"},
        {**plain, "title": "Docks", "description": "What one sees in a harbour at dawn"},
    ]
    for i, fields in enumerate(harbour):
        await _put_set(aws, "carol", f"harbour-{i}.zip", 1, **fields)
    await Pipeline(aws, db).run_all()
    assert await db.fetchval("SELECT count(*) FROM search_documents") == 6
    return Corpus(sets=6, icons=MDI_ICONS + 2 + 4)


async def find(db: asyncpg.Pool, q: str = "", **fields: Any) -> SearchResults:
    async with db.acquire() as connection:
        return await search(connection, SearchQuery(q=q, **fields))


def titles(results: SearchResults, kind: str | None = None) -> list[str]:
    return [h.title for h in results.hits if kind in (None, h.type)]


# --- icons and sets ---------------------------------------------------------------------


async def test_an_icon_s_name_finds_the_icon_with_its_set(db: asyncpg.Pool, corpus: Corpus) -> None:
    results = await find(db, "flashlight")
    icon, found_set = results.hits[0], results.hits[1]
    assert (icon.type, icon.title, icon.image_path) == ("icon", "Flashlight", "flashlight.svg")
    assert icon.set_title == MDI_TITLE
    assert (icon.license, icon.family, icon.contributor) == (
        "apache-2.0",
        "material-design-icons",
        "acme",
    )
    image = await db.fetchrow("SELECT * FROM images WHERE id = $1", icon.image_id)
    assert image is not None
    assert image["status"] == "ready"
    assert (
        icon.renditions
        == f"renditions/{icon.image_id}/" + image["renditions"][0]["key"].split("/")[2] + "/"
    )
    assert all(r["key"].startswith(icon.renditions) for r in image["renditions"])
    assert icon.family_preview_key
    assert icon.family_preview_key.startswith("previews/families/")
    # its set, found by what it contains, below the icon itself
    assert (found_set.type, found_set.title, found_set.product_id) == (
        "set",
        MDI_TITLE,
        icon.product_id,
    )
    assert found_set.rank < icon.rank
    assert found_set.renditions
    assert found_set.renditions.endswith(".png")
    assert results.total == 2

    assert titles(await find(db, "flashlight", type="icon")) == ["Flashlight"]
    assert titles(await find(db, "flashlight", type="set")) == [MDI_TITLE]


async def test_typos_hyphens_and_word_starts(db: asyncpg.Pool, corpus: Corpus) -> None:
    # typos: trigram similarity to the vocabulary ("materal" also stems to a prefix of
    # "material"; the others are found by similarity only)
    assert titles(await find(db, "materal", type="set")) == [MDI_TITLE]
    assert titles(await find(db, "flashlite", type="icon")) == ["Flashlight"]
    assert titles(await find(db, "skeletns", type="set")) == ["T Rex Skeletons"]
    exact, typo = await find(db, "flashlight"), await find(db, "flashlite")
    assert exact.hits[0].rank > typo.hits[0].rank  # the exact word ranks above a typo of it
    assert not (await find(db, "zzyzx")).hits

    # hyphens and spaces alike, and the words joined
    for q in ["t-rex", "T Rex", "trex", "T-REX", "t rex skeletons"]:
        results = await find(db, q)
        assert "T Rex Skeletons" in titles(results, "set"), q
        if "skeletons" not in q:
            assert "T-Rex skull" in titles(results, "icon"), q  # its title says "T-Rex"
        assert MDI_TITLE not in titles(results), q

    # a word's start: type-ahead
    assert titles(await find(db, "flash", type="icon")) == ["Flashlight"]
    assert titles(await find(db, "lightb", type="icon")) == ["Lightbulb variant"]
    assert "Flashlight" in titles(await find(db, "fla"))
    assert titles(await find(db, "harb", type="set"))[:1] == ["Harbour lights"]


async def test_licenses_are_searchable_and_filter(db: asyncpg.Pool, corpus: Corpus) -> None:
    results = await find(db, "apache-2.0", limit=MAX_LIMIT)
    assert results.total == 1 + MDI_ICONS
    assert {h.license for h in results.hits} == {"apache-2.0"}
    assert titles(await find(db, "apache 2.0", type="set")) == [MDI_TITLE]

    by_filter = await find(db, license="MIT")  # filters ignore case
    assert by_filter.total == 3
    assert {h.license for h in by_filter.hits} == {"mit"}
    assert by_filter.query.license == "mit"
    assert not (await find(db, "flashlight", license="mit")).hits

    # -word excludes
    assert titles(await find(db, "harbour -boats", type="set")) == [
        "Harbour lights",
        "Ships",
        "Docks",
    ]
    assert not (await find(db, "-harbour")).hits  # nothing to find is not everything


# --- ranking, facets, filters, pages ----------------------------------------------------


async def test_ranking_title_tags_family_description_and_pages(
    db: asyncpg.Pool, corpus: Corpus
) -> None:
    results = await find(db, "harbour", type="set")
    assert titles(results) == ["Harbour lights", "Boats", "Ships", "Docks"]
    ranks = [h.rank for h in results.hits]
    assert ranks == sorted(ranks, reverse=True)
    assert len(set(ranks)) == 4

    # pages: disjoint, in the order of the whole, complete; total is the whole match
    whole = await find(db, limit=MAX_LIMIT)
    assert len(whole.hits) == whole.total == corpus.sets + corpus.icons
    seen: list[tuple[str, Any]] = []
    for offset in range(0, whole.total, 7):
        page = await find(db, limit=7, offset=offset)
        assert page.total == whole.total
        seen.extend((h.type, h.image_id or h.product_id) for h in page.hits)
    assert seen == [(h.type, h.image_id or h.product_id) for h in whole.hits]
    assert len(set(seen)) == whole.total
    assert not (await find(db, offset=MAX_OFFSET)).hits


async def test_facets_count_the_whole_match_and_filters_narrow_it(
    db: asyncpg.Pool, corpus: Corpus
) -> None:
    everything = await find(db, limit=1)  # browse: no words
    assert everything.total == corpus.sets + corpus.icons
    assert len(everything.hits) == 1
    facets = {
        name: {c.value: c.count for c in counts} for name, counts in everything.facets.items()
    }
    assert facets["type"] == {"set": corpus.sets, "icon": corpus.icons}
    assert facets["license"] == {"apache-2.0": 16, "standard": 8, "mit": 3}
    assert facets["contributor"] == {"acme": 16, "carol": 8, "bob": 3}
    assert facets["product_type"] == {"icon_set": 24, "illustration_set": 3}
    assert facets["family"] == {
        "material-design-icons": 16,
        "test-family": 6,
        "dinosaurs": 3,
        "harbour-fleet": 2,
    }

    # A filter narrows the hits and the other facets; its own facet keeps the alternatives.
    narrowed = await find(db, license="standard", type="set", limit=MAX_LIMIT)
    assert narrowed.total == 4
    assert {h.type for h in narrowed.hits} == {"set"}
    facets = {name: {c.value: c.count for c in counts} for name, counts in narrowed.facets.items()}
    assert facets["license"] == {"apache-2.0": 1, "standard": 4, "mit": 1}
    assert facets["type"] == {"set": 4, "icon": 4}
    assert facets["family"] == {"test-family": 3, "harbour-fleet": 1}
    assert facets["contributor"] == {"carol": 4}

    for field, value, total in [
        ("family", "dinosaurs", 3),
        ("contributor", "carol", 8),
        ("product_type", "illustration_set", 3),
        ("type", "icon", corpus.icons),
    ]:
        assert (await find(db, **{field: value})).total == total, field
    # words and filters together: the harbour sets of the family harbour-fleet
    assert titles(await find(db, "harbour", family="harbour-fleet")) == ["Ships", "ab-testing"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"limit": 0}, f"limit: limit must be from 1 to {MAX_LIMIT}, not 0"),
        ({"limit": MAX_LIMIT + 1}, f"limit must be from 1 to {MAX_LIMIT}, not {MAX_LIMIT + 1}"),
        ({"offset": -1}, f"offset must be from 0 to {MAX_OFFSET}, not -1"),
        ({"offset": MAX_OFFSET + 1}, "narrow the search with words or filters"),
        ({"type": "vector"}, "type: Input should be 'icon' or 'set'"),
        ({"q": "x" * 201}, "q: the query is 201 characters; at most 200"),
        ({"colour": "red"}, "colour: unknown parameter (known: q, type, license"),
    ],
)
def test_a_query_out_of_bounds_is_refused_clearly(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SearchQuery(**fields)
    assert any(message in line for line in describe_errors(raised.value)), describe_errors(
        raised.value
    )


# --- the indexer's upkeep -----------------------------------------------------------------


async def test_icons_follow_their_set_and_are_written_only_on_change(
    aws: Aws, db: asyncpg.Pool
) -> None:
    await _put_set(aws, "acme", "set.zip", 3, title="Lighthouse keepers")
    await Pipeline(aws, db).run_all()
    product = await db.fetchval("SELECT id FROM products")
    icons = await db.fetch("SELECT * FROM search_icons ORDER BY position")
    assert [i["title"] for i in icons] == [p.removesuffix(".svg") for p in svgs(3)]

    # A repeated index message changes nothing: the rows are not rewritten.
    upload = await db.fetchval("SELECT current_upload_id FROM products")
    await aws.send(aws.settings.index_queue, [IndexProduct(upload_id=upload, product_id=product)])
    await Pipeline(aws, db).drain("index")
    again = await db.fetch("SELECT * FROM search_icons ORDER BY position")
    assert [i["indexed_at"] for i in again] == [i["indexed_at"] for i in icons]

    # A new version without the first icon: it stops being ready (retired), it leaves search.
    kept = dict(list(svgs(3).items())[1:])
    body = manifest(list(kept), title="Lighthouse keepers")
    await put_upload(aws, "acme", make_zip({"manifest.json": body, **kept}), "set.zip")
    await Pipeline(aws, db).run_all()
    first = next(iter(svgs(1))).removesuffix(".svg")
    assert first not in titles(await find(db, first, type="icon"))
    assert [r["title"] for r in await db.fetch("SELECT title FROM search_icons")] == [
        p.removesuffix(".svg") for p in kept
    ]

    # Nothing ready any more: the set and its icons leave search together.
    await db.execute("UPDATE images SET status = 'failed' WHERE product_id = $1", product)
    await db.execute(
        "UPDATE products SET images_ready = 0, images_failed = image_count WHERE id = $1",
        product,
    )
    await aws.send(aws.settings.index_queue, [IndexProduct(upload_id=upload, product_id=product)])
    await Pipeline(aws, db).drain("index")
    assert await db.fetchval("SELECT count(*) FROM search_documents") == 0
    assert await db.fetchval("SELECT count(*) FROM search_icons") == 0
    assert (await find(db)).total == 0


# --- ingest search ------------------------------------------------------------------------


async def test_ingest_search_and_reindex(
    settings: IngestSettings, db: asyncpg.Pool, corpus: Corpus
) -> None:
    shown = run_ingest(settings, "search", "flashlight")
    lines = shown.stdout.splitlines()
    assert lines[0] == "2 match(es) for 'flashlight', showing 1–2"
    assert lines[1].startswith("  icon ")
    assert "Flashlight  (flashlight.svg in" in lines[1]
    assert lines[3].startswith("  set ")
    assert MDI_TITLE in lines[3]
    assert "type:         icon 1, set 1" in lines
    assert "license:      apache-2.0 2" in lines

    as_json = json.loads(
        run_ingest(
            settings,
            "search",
            "harbour",
            "--type",
            "set",
            "--limit",
            "2",
            "--offset",
            "1",
            "--json",
        ).stdout
    )
    assert as_json["total"] == 4
    assert [h["title"] for h in as_json["hits"]] == ["Boats", "Ships"]
    assert uuid.UUID(as_json["hits"][0]["product_id"])
    assert as_json["facets"]["type"] == [
        {"value": "set", "count": 4},
        {"value": "icon", "count": 3},  # the icons of Docks do not have its description
    ]

    browse = json.loads(run_ingest(settings, "search", "--license", "mit", "--json").stdout)
    assert browse["total"] == 3

    none = run_ingest(settings, "search", "zzyzx", check=False)
    assert (none.returncode, none.stderr.strip()) == (1, "no match")
    refused = run_ingest(settings, "search", "x", "--limit", "500", check=False)
    assert refused.returncode == 2
    assert f"limit must be from 1 to {MAX_LIMIT}, not 500" in refused.stderr

    # As after the migration on a database indexed before it: sets only, no vocabulary.
    await db.execute("DELETE FROM search_icons")
    await db.execute("DELETE FROM search_words")
    assert not (await find(db, "flashlight", type="icon")).hits
    assert not (await find(db, "flashlite")).hits
    reindexed = run_ingest(settings, "reindex")
    assert reindexed.stdout.strip() == (
        f"reindexed 6 product(s): 6 searchable, {corpus.icons} icon(s)"
    )
    assert titles(await find(db, "flashlight", type="icon")) == ["Flashlight"]
    assert titles(await find(db, "flashlite")) == ["Flashlight", MDI_TITLE]
