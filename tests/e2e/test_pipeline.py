"""End to end: the four services as four OS processes, a real upload, real files out."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import pyvips
from ingest_cli.upload import upload_set
from ingest_common.aws import Aws
from ingest_common.search import PostgresSearch
from ingest_devstack.local import local_env, services

from tests.conftest import SAMPLE
from tests.integration.pipeline import assert_mosaic_decodes, fetch_row, mdi_set, wait_finished

pytestmark = pytest.mark.e2e


async def test_upload_to_search_through_four_processes(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    env = local_env(
        aws.settings.aws_endpoint_url or "",
        database_url,
        receive_wait_seconds="2",
        safety_net_delay="60",
        mosaic_images="100",
        render_workers="2",
        log_format="json",
    )
    with services(env, tmp_path / "logs") as running:
        uploads = [
            await upload_set(aws, SAMPLE / "mdi-essentials", "pictogrammers"),
            await upload_set(aws, SAMPLE / "openmoji-sampler", "openmoji"),
            # Another set of the same family, so the mosaic must draw across sets.
            await upload_set(
                aws,
                mdi_set(tmp_path / "mdi-more", 6, title="Material Design Extras"),
                "pictogrammers",
            ),
        ]
        statuses = await wait_finished(db, uploads)
        assert all(p.poll() is None for p in running.processes.values()), "a service died"
        exit_codes = running.stop()
    assert exit_codes == dict.fromkeys(exit_codes, 0), "every service drains and exits cleanly"

    for uploaded, status in zip(uploads, statuses, strict=True):
        assert status.upload["status"] == "ready"
        assert status.upload["trace_id"] == uploaded.trace_id  # one upload, one trace
        assert status.product is not None
        assert status.product["images_ready"] == status.product["image_count"] == len(status.images)
        for image in status.images:
            await check_renditions(aws, image)

    mdi_products = {statuses[0].product["id"], statuses[2].product["id"]}  # type: ignore[index]
    preview = await fetch_row(
        db,
        "SELECT * FROM family_previews WHERE family_id = $1",
        statuses[0].product["family_id"],  # type: ignore[index]
    )
    assert len(preview["image_ids"]) == 30  # 24 + 6: every ready image, since N = 100
    drawn_from = await db.fetch(
        "SELECT DISTINCT product_id FROM images WHERE id = ANY($1::uuid[])", preview["image_ids"]
    )
    assert {r["product_id"] for r in drawn_from} == mdi_products
    for mosaic in await assert_mosaic_decodes(aws, preview):
        assert mosaic.width > 128 * 5  # a grid of 30 tiles, not one picture

    async with db.acquire() as connection:
        hits = await PostgresSearch(connection).search("seedling")
        assert [h.title for h in hits] == ["OpenMoji Sampler"]
        hits = await PostgresSearch(connection).search("material")
        assert {h.title for h in hits} == {"Material Design Essentials", "Material Design Extras"}
        assert all(h.family_preview_key == preview["png_key"] for h in hits)


async def check_renditions(aws: Aws, image: dict[str, object]) -> None:
    renditions = image["renditions"]
    assert isinstance(renditions, list)
    assert {(r["width"], r["format"]) for r in renditions} == {
        (w, f) for w in (64, 128, 256, 512) for f in ("png", "webp")
    }
    for rendition in renditions:
        data = await aws.get_bytes(aws.settings.previews_bucket, rendition["key"])
        decoded = pyvips.Image.new_from_buffer(data, "")
        assert decoded.get("vips-loader") == f"{rendition['format']}load_buffer"
        assert (decoded.width, decoded.height) == (rendition["width"], rendition["height"])
        assert decoded.bands == 4  # sRGB with alpha
