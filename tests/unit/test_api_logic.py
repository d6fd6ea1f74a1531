"""The API's pure logic: keys, settings, the progress events a change makes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ingest_api.progress import awaiting_view, changes
from ingest_api.settings import ApiSettings
from ingest_batcher.keys import contributor_of
from ingest_batcher.settings import BatcherSettings
from ingest_common.apikeys import (
    KEY_MARK,
    PREFIX_LENGTH,
    contributor_problem,
    key_hash,
    key_prefix,
    looks_like_a_key,
    new_key,
)


def test_keys_are_random_and_identified_by_their_prefix() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(KEY_MARK)
        assert len(key) == len(KEY_MARK) + 43
        assert looks_like_a_key(key)
        assert key_prefix(key) == key[:PREFIX_LENGTH]
        assert len(key_hash(key)) == 64
        assert key not in key_hash(key)
    assert not looks_like_a_key("ik_")
    assert not looks_like_a_key("Bearer something")


@pytest.mark.parametrize(
    "name",
    ["acme", "a", "acme-icons", "acme_2", "0day", "x" * 63, "x" * 64, "Acme", "-acme", "a/b", ""],
)
def test_a_contributor_name_is_what_the_batcher_reads_from_a_key(name: str) -> None:
    assert (contributor_problem(name) is None) == (contributor_of(f"uploads/{name}/s.zip") == name)


def test_the_api_signs_the_batchers_archive_limit() -> None:
    assert ApiSettings().max_archive_bytes == BatcherSettings().max_archive_bytes
    assert ApiSettings.env("max_archive_bytes") == BatcherSettings.env("max_archive_bytes")


def test_public_urls_default_to_the_previews_bucket() -> None:
    assert ApiSettings().public_url("a/b.png") == "https://ingest-previews.s3.amazonaws.com/a/b.png"
    eu = ApiSettings(aws_region="eu-west-1")
    assert eu.public_base() == "https://ingest-previews.s3.eu-west-1.amazonaws.com"
    local = ApiSettings(aws_endpoint_url="http://127.0.0.1:5000/")
    assert local.public_base() == "http://127.0.0.1:5000/ingest-previews"
    cdn = ApiSettings(public_base_url="https://cdn.example.com/")
    assert cdn.public_url("m.webp") == "https://cdn.example.com/m.webp"


def test_the_api_and_its_health_need_a_port_each() -> None:
    with pytest.raises(ValueError, match="INGEST_API_PORT and INGEST_HEALTH_PORT"):
        ApiSettings(api_port=8085)


def _view(**overrides: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": "u",
        "upload_id": "u",
        "status": "processing",
        "reason": None,
        "duplicate_of": None,
        "replaced_by": None,
        "product": {"id": "p", "family": "f", "complete": False},
        "files": [
            {"path": "a.svg", "status": "pending", "reason": None},
            {"path": "b.svg", "status": "pending", "reason": None},
        ],
        "mosaic": False,
        "indexed": False,
        "finished": False,
    }
    view.update(overrides)
    return view


def test_a_new_client_gets_the_whole_state_first() -> None:
    assert [name for name, _ in changes(None, _view())] == ["state"]
    done = _view(finished=True)
    assert [name for name, _ in changes(None, done)] == ["state", "done"]


def test_each_finished_image_is_one_event_then_product_mosaic_index_done() -> None:
    start = _view()
    one = _view(
        files=[
            {"path": "a.svg", "status": "ready", "reason": None},
            {"path": "b.svg", "status": "pending", "reason": None},
        ]
    )
    assert [(n, d["path"]) for n, d in changes(start, one)] == [("image", "a.svg")]
    assert changes(one, one) == []
    files = [
        {"path": "a.svg", "status": "ready", "reason": None},
        {"path": "b.svg", "status": "failed", "reason": "too big"},
    ]
    complete = _view(
        files=files, status="ready", product={"id": "p", "family": "f", "complete": True}
    )
    assert [n for n, _ in changes(one, complete)] == ["upload", "image", "product"]
    finished = {**complete, "mosaic": True, "indexed": True, "finished": True}
    events = changes(complete, finished)
    assert [n for n, _ in events] == ["mosaic", "indexed", "done"]
    assert events[-1][1]["files"] == {"ready": 1, "failed": 1, "refused": 0, "pending": 0}
    # A client that missed everything in between still gets every image, once, in order.
    assert [n for n, _ in changes(start, finished)] == [
        "upload",
        "image",
        "image",
        "product",
        "mosaic",
        "indexed",
        "done",
    ]


def test_a_form_waits_for_its_file_and_expires_only_unused() -> None:
    now = datetime.now(UTC)
    form = {"object_key": "uploads/acme/x.zip", "trace_id": None, "expires_at": now - timedelta(1)}
    ref = uuid.uuid4()
    assert awaiting_view(ref, form, stored=False, now=now)["status"] == "expired"
    assert awaiting_view(ref, form, stored=False, now=now)["finished"]
    stored = awaiting_view(ref, form, stored=True, now=now)
    assert (stored["status"], stored["finished"]) == ("uploaded", False)
    fresh = awaiting_view(ref, {**form, "expires_at": now + timedelta(1)}, stored=False, now=now)
    assert (fresh["status"], fresh["finished"]) == ("awaiting_upload", False)
