"""The complete end state every reliability case must reach, checked from SQL and S3 listings.

- every upload finished; every active image ready, or failed for a reason of its own (a
  file problem), never for the fault (no retryable failure left over);
- each product's counters equal its rows, and its state follows from them;
- exactly the configured renditions of every ready image under `renditions/`, and nothing
  else; every active image's original under `originals/`, and nothing else;
- one current mosaic per family that has a ready image (its revision is the family's),
  and under `previews/families/` only the current mosaics' objects;
- every product with a ready image searchable with its current document, none without;
- every dead-letter queue empty.

Call `sweep_all` first: objects a case orphaned on purpose are deleted by the sweeper.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ingest_common.aws import Aws
from ingest_common.db.pool import connect
from ingest_common.garbage import sweep
from ingest_common.search import product_document
from ingest_common.topology import load_topology
from ingest_processor.render import RenderSpec

from tests.integration.pipeline import queue_counts

UNFINISHED = ("received", "processing")
DEFAULT_SPEC = RenderSpec()
SWEEP_AHEAD = (
    24 * 3600.0
)  # seconds: every garbage row, whatever its delay  # the processor's defaults: what the cases render


@dataclass
class EndState:
    expected_ready: int
    images: int = 0
    ready: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path → reason
    missing_objects: int = 0
    dead_letters: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Images that should be ready with every rendition stored, and are not."""
        return max(0, self.expected_ready - self.ready) + self.missing_objects

    def assert_complete(self) -> None:
        assert not self.problems, "\n".join(self.problems)
        assert self.ready == self.expected_ready, f"{self.ready} of {self.expected_ready} ready"


async def list_keys(aws: Aws, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    paginator = aws.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def sweep_all(aws: Aws, dsn: str) -> None:
    """Delete every object recorded as garbage, due or not: the case's work is over, so
    nothing a delay protects is in flight any more."""
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        while (await sweep(aws, pool, ahead=SWEEP_AHEAD)).busy:
            pass
    finally:
        await pool.close()


async def end_state(
    aws: Aws,
    dsn: str,
    *,
    expected_ready: int,
    expected_failed: int = 0,
    spec: RenderSpec = DEFAULT_SPEC,
) -> EndState:
    state = EndState(expected_ready)
    settings = aws.settings
    connection = await connect(dsn)
    try:
        uploads = await connection.fetch("SELECT id, status::text AS status FROM uploads")
        images = await connection.fetch(
            """SELECT id, product_id, path, status::text AS status, failure_reason,
                      failure_retryable, renditions, original_key
                 FROM images WHERE status <> 'retired'"""
        )
        products = await connection.fetch(
            """SELECT id, family_id, status::text AS status, image_count, images_ready,
                      images_failed, completed_at, previewed_at, indexed_at, progressed_at
                 FROM products"""
        )
        families = await connection.fetch("SELECT id, slug, revision FROM families")
        previews = {
            r["family_id"]: r for r in await connection.fetch("SELECT * FROM family_previews")
        }
        indexed = {
            r["product_id"]: r["document"]
            for r in await connection.fetch("SELECT product_id, document FROM search_documents")
        }
        documents = {p["id"]: await product_document(connection, p["id"]) for p in products}
        icons = await connection.fetch("SELECT product_id, image_id FROM search_icons")
    finally:
        await connection.close()

    problems = state.problems
    for upload in uploads:
        if upload["status"] in UNFINISHED:
            problems.append(f"upload {upload['id']} is still {upload['status']}")

    state.images = len(images)
    state.ready = sum(1 for i in images if i["status"] == "ready")
    state.failed = {i["path"]: i["failure_reason"] for i in images if i["status"] == "failed"}
    if len(state.failed) != expected_failed:
        problems.append(f"{len(state.failed)} failed images, expected {expected_failed}")
    for image in images:
        if image["status"] == "pending":
            problems.append(f"image {image['path']} is still pending")
        if image["status"] == "failed" and (
            not image["failure_reason"] or image["failure_retryable"]
        ):
            problems.append(
                f"image {image['path']} failed for no reason of its own: {image['failure_reason']}"
            )

    _check_counters(products, images, problems)
    await _check_renditions(aws, settings.previews_bucket, images, spec, state)
    await _check_originals(aws, settings.uploads_bucket, images, state)
    await _check_mosaics(aws, settings.previews_bucket, families, previews, images, products, state)
    _check_search(products, indexed, documents, images, icons, problems)

    for queue in load_topology(settings).queues:
        count = sum(await queue_counts(aws, queue.dead_letter_name))
        state.dead_letters += count
        if count:
            problems.append(f"{count} message(s) in {queue.dead_letter_name}")
    return state


def _check_counters(products: list[Any], images: list[Any], problems: list[str]) -> None:
    for product in products:
        mine = [i for i in images if i["product_id"] == product["id"]]
        ready = sum(1 for i in mine if i["status"] == "ready")
        failed = sum(1 for i in mine if i["status"] == "failed")
        counted = (product["image_count"], product["images_ready"], product["images_failed"])
        if counted != (len(mine), ready, failed):
            problems.append(
                f"product {product['id']} counts {counted}, its rows {(len(mine), ready, failed)}"
            )
        expected = "processing" if ready + failed < len(mine) else "ready" if ready else "failed"
        if product["status"] != expected or (product["completed_at"] is None) != (
            expected == "processing"
        ):
            problems.append(f"product {product['id']} is {product['status']}, not {expected}")


async def _check_renditions(
    aws: Aws, bucket: str, images: list[Any], spec: RenderSpec, state: EndState
) -> None:
    stored = await list_keys(aws, bucket, "renditions/")
    wanted: set[str] = set()
    per_image = len(spec.widths) * len(spec.formats)
    for image in images:
        if image["status"] != "ready":
            continue
        keys = {r["key"] for r in image["renditions"]}
        wanted |= keys
        if len(keys) != per_image:
            state.problems.append(f"image {image['path']} has {len(keys)} renditions")
        state.missing_objects += len(keys - stored)
    if missing := wanted - stored:
        state.problems.append(f"{len(missing)} rendition objects missing, e.g. {min(missing)}")
    if extra := stored - wanted:
        state.problems.append(f"{len(extra)} objects under renditions/ nothing refers to")


async def _check_originals(aws: Aws, bucket: str, images: list[Any], state: EndState) -> None:
    stored = await list_keys(aws, bucket, "originals/")
    wanted = {i["original_key"] for i in images}
    if missing := wanted - stored:
        state.problems.append(f"{len(missing)} originals missing, e.g. {min(missing)}")
    if extra := stored - wanted:
        state.problems.append(f"{len(extra)} originals no active image uses, e.g. {min(extra)}")


async def _check_mosaics(
    aws: Aws,
    bucket: str,
    families: list[Any],
    previews: dict[uuid.UUID, Any],
    images: list[Any],
    products: list[Any],
    state: EndState,
) -> None:
    family_of = {p["id"]: p["family_id"] for p in products}
    with_ready = {family_of[i["product_id"]] for i in images if i["status"] == "ready"}
    stored = await list_keys(aws, bucket, "previews/families/")
    wanted: set[str] = set()
    for family in families:
        preview = previews.get(family["id"])
        if family["id"] not in with_ready:
            if preview is not None:
                state.problems.append(f"family {family['slug']} has a mosaic but nothing ready")
            continue
        if preview is None:
            state.problems.append(f"family {family['slug']} has no mosaic")
            continue
        if preview["revision"] != family["revision"]:
            state.problems.append(
                f"family {family['slug']}'s mosaic is of revision {preview['revision']},"
                f" the family is at {family['revision']}"
            )
        wanted |= {preview["png_key"], preview["webp_key"]}
    if missing := wanted - stored:
        state.problems.append(f"{len(missing)} mosaic objects missing")
    if extra := stored - wanted:
        state.problems.append(f"{len(extra)} mosaic objects are not a current mosaic")


def _check_search(
    products: list[Any],
    indexed: dict[uuid.UUID, Any],
    documents: dict[uuid.UUID, Any],
    images: list[Any],
    icons: list[Any],
    problems: list[str],
) -> None:
    """Every product with a ready image is searchable with its current document, and its
    searchable icons are exactly its ready images; nothing else is searchable."""
    icons_of: dict[uuid.UUID, set[uuid.UUID]] = {}
    for icon in icons:
        icons_of.setdefault(icon["product_id"], set()).add(icon["image_id"])
    for product in products:
        document = indexed.get(product["id"])
        searchable_icons = icons_of.get(product["id"], set())
        if product["images_ready"] == 0:
            if document is not None or searchable_icons:
                problems.append(f"product {product['id']} is searchable with nothing ready")
            continue
        if document is None:
            problems.append(f"product {product['id']} is not searchable")
        elif document != documents[product["id"]]:
            problems.append(f"product {product['id']} is indexed with an old document")
        ready = {
            i["id"] for i in images if i["product_id"] == product["id"] and i["status"] == "ready"
        }
        if searchable_icons != ready:
            problems.append(
                f"product {product['id']}: {len(searchable_icons - ready)} searchable icon(s)"
                f" not ready, {len(ready - searchable_icons)} ready image(s) not searchable"
            )
