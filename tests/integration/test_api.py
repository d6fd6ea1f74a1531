"""The HTTP API against real PostgreSQL and moto: keys, upload forms that really upload,
live status while the real pipeline runs, the published products, and the process itself."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from ingest_api.app import Api, build_app, hub_reader
from ingest_api.progress import ProgressHub
from ingest_api.settings import ApiSettings
from ingest_cli.zipping import zip_folder
from ingest_common.apikeys import create_key, revoke_key
from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings
from ingest_common.topology import apply_topology, load_topology

from tests.integration.pipeline import (
    Pipeline,
    make_zip,
    manifest,
    mdi_set,
    run_ingest,
    settings_from,
    svgs,
    upload_row,
)

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def api(
    settings: IngestSettings, aws: Aws, db: asyncpg.Pool
) -> AsyncIterator[tuple[Client, Api]]:
    api_settings = settings_from(ApiSettings, settings, api_upload_expires=600)
    hub = ProgressHub(api_settings, hub_reader(api_settings, db, aws))
    state = Api(api_settings, db, aws, hub)
    listener = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.listening.wait(), 10)
    try:
        async with TestClient(TestServer(build_app(state))) as client:
            yield client, state
    finally:
        hub.closing.set()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def key_for(db: asyncpg.Pool, contributor: str) -> dict[str, str]:
    async with db.acquire() as connection:
        _, key = await create_key(connection, contributor)
    return {"Authorization": f"Bearer {key}"}


async def post_form(
    form: dict[str, Any], data: bytes, content_type: str = "application/zip"
) -> int:
    """Send `data` with the upload form, as a browser would (multipart/form-data)."""
    body = aiohttp.FormData()
    for name, value in form["upload"]["fields"].items():
        body.add_field(name, value)
    body.add_field("file", data, filename="set.zip", content_type=content_type)
    async with (
        aiohttp.ClientSession() as session,
        session.post(form["upload"]["url"], data=body) as response,
    ):
        await response.read()
        return response.status


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) for each event of a stream; ("comment", text) for each comment."""
    event: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if event is not None:
                yield event, json.loads("\n".join(data))
            event, data = None, []
        elif line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data.append(line.removeprefix("data: "))


def policy_of(form: dict[str, Any]) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(base64.b64decode(form["upload"]["fields"]["policy"]))
    return policy


def policy_allows(
    policy: dict[str, Any], fields: dict[str, str], size: int, bucket: str = "ingest-uploads"
) -> bool:
    """S3's check of a POST against its policy (the conditions used here): what moto does
    not do, so the tests do it."""
    fields = {**fields, "bucket": bucket}
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            (name, value), *_ = condition.items()
            if fields.get(name) != value:
                return False
        elif condition[0] == "content-length-range":
            if not condition[1] <= size <= condition[2]:
                return False
        elif condition[0] == "eq" and fields.get(condition[1].lstrip("$")) != condition[2]:
            return False
    return True


# --- keys ----------------------------------------------------------------------------------


async def test_every_contributor_endpoint_wants_a_valid_key(
    api: tuple[Client, Api], db: asyncpg.Pool
) -> None:
    client, _ = api
    some = uuid.uuid4()
    for method, path in [
        ("POST", "/v1/uploads"),
        ("GET", f"/v1/uploads/{some}"),
        ("GET", f"/v1/uploads/{some}/events"),
    ]:
        response = await client.request(method, path)
        assert response.status == 401, path
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="ingest"'
        error = (await response.json())["error"]
        assert error["code"] == "unauthenticated"
        assert "Authorization: Bearer" in error["message"]

    response = await client.post("/v1/uploads", headers={"Authorization": "Bearer ik_nonsense1234"})
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert (await response.json())["error"]["code"] == "invalid_key"

    async with db.acquire() as connection:
        row, key = await create_key(connection, "acme")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.post("/v1/uploads", headers=headers)).status == 201
    # A key that differs from a real one only after its prefix is refused too.
    forged = {"Authorization": f"Bearer {key[:-2]}xx"}
    assert (await client.post("/v1/uploads", headers=forged)).status == 401
    last_used = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", row.id)
    assert last_used is not None

    async with db.acquire() as connection:
        await revoke_key(connection, row.prefix)
    response = await client.post("/v1/uploads", headers=headers)
    assert response.status == 401
    assert "revoked" in (await response.json())["error"]["message"]


async def test_a_contributor_sees_only_their_own_uploads(
    api: tuple[Client, Api], db: asyncpg.Pool
) -> None:
    client, _ = api
    acme, other = await key_for(db, "acme"), await key_for(db, "globex")
    form = await (await client.post("/v1/uploads", headers=acme)).json()
    assert (await client.get(f"/v1/uploads/{form['id']}", headers=acme)).status == 200
    for path in (f"/v1/uploads/{form['id']}", f"/v1/uploads/{form['id']}/events"):
        response = await client.get(path, headers=other)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    response = await client.get("/v1/uploads/not-a-uuid", headers=acme)
    assert response.status == 400
    assert "UUID" in (await response.json())["error"]["message"]


# --- upload forms ----------------------------------------------------------------------------


async def test_the_upload_form_is_signed_with_the_limits_and_the_trace(
    api: tuple[Client, Api], db: asyncpg.Pool
) -> None:
    client, state = api
    headers = await key_for(db, "acme")
    response = await client.post(
        "/v1/uploads", headers={**headers, "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    )
    assert response.status == 201
    form = await response.json()
    assert response.headers["Location"] == f"/v1/uploads/{form['id']}"
    assert form["key"] == f"uploads/acme/{form['id']}.zip"
    assert form["expires_in"] == 600
    assert form["max_bytes"] == state.settings.max_archive_bytes
    # The trace continues the client's, and the form carries the API request's context.
    assert form["trace_id"] == "ab" * 16
    fields = form["upload"]["fields"]
    assert fields["x-amz-meta-traceparent"].split("-")[1] == "ab" * 16
    assert fields["Content-Type"] == "application/zip"
    assert fields["key"] == form["key"]

    policy = policy_of(form)
    conditions = policy["conditions"]
    assert ["content-length-range", 1, state.settings.max_archive_bytes] in conditions
    assert {"Content-Type": "application/zip"} in conditions
    assert {"x-amz-meta-traceparent": fields["x-amz-meta-traceparent"]} in conditions
    assert {"key": form["key"]} in conditions
    assert {"bucket": state.settings.uploads_bucket} in conditions
    assert policy_allows(policy, fields, 1000)
    assert not policy_allows(policy, fields, state.settings.max_archive_bytes + 1)
    assert not policy_allows(policy, fields, 0)
    assert not policy_allows(policy, {**fields, "Content-Type": "text/plain"}, 1000)
    assert not policy_allows(policy, {**fields, "key": "uploads/globex/x.zip"}, 1000)
    assert not policy_allows(policy, {**fields, "x-amz-meta-traceparent": "00-x"}, 1000)

    row = await db.fetchrow("SELECT * FROM upload_forms WHERE id = $1", uuid.UUID(form["id"]))
    assert row is not None
    assert row["contributor_id"] == "acme"
    assert row["object_key"] == form["key"]


async def test_what_the_form_cannot_take_is_refused_in_words(
    api: tuple[Client, Api], db: asyncpg.Pool
) -> None:
    client, state = api
    headers = await key_for(db, "acme")
    too_big = state.settings.max_archive_bytes + 1
    response = await client.post("/v1/uploads", headers=headers, json={"size": too_big})
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "too_large"
    assert "200.0 MiB limit" in error["message"]
    response = await client.post(
        "/v1/uploads", headers=headers, json={"size": 10, "content_type": "application/x-tar"}
    )
    assert response.status == 422
    assert "ZIP" in (await response.json())["error"]["message"]
    response = await client.post("/v1/uploads", headers=headers, json={"size": "big"})
    assert response.status == 422
    response = await client.post("/v1/uploads", headers=headers, data=b"{not json")
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"
    response = await client.post("/v1/uploads", headers=headers, json={"size": 1000})
    assert response.status == 201


async def test_the_uploads_bucket_lets_browsers_post(aws: Aws, settings: IngestSettings) -> None:
    cors = await aws.s3.get_bucket_cors(Bucket=settings.uploads_bucket)
    (rule,) = cors["CORSRules"]
    assert rule["AllowedMethods"] == ["POST"]
    assert rule["AllowedOrigins"] == ["*"]
    # The API's setting decides the origins where the settings have it.
    api_settings = settings_from(ApiSettings, settings, api_cors_origins=["https://shop.example"])
    await apply_topology(aws, load_topology(api_settings))
    cors = await aws.s3.get_bucket_cors(Bucket=settings.uploads_bucket)
    assert cors["CORSRules"][0]["AllowedOrigins"] == ["https://shop.example"]


# --- the whole way: form, S3, pipeline, live status, public pages --------------------------


async def test_an_upload_through_the_form_streams_its_progress_and_is_published(
    api: tuple[Client, Api], aws: Aws, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, state = api
    headers = await key_for(db, "acme")
    form = await (await client.post("/v1/uploads", headers=headers)).json()
    status = await (await client.get(f"/v1/uploads/{form['id']}", headers=headers)).json()
    assert status["status"] == "awaiting_upload"
    assert not status["finished"]

    stream = await client.get(f"/v1/uploads/{form['id']}/events", headers=headers)
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    events: list[tuple[str, Any]] = []

    async def read() -> None:
        async for event in sse_events(stream):
            events.append(event)
            if event[0] == "done":
                return

    reader = asyncio.create_task(read())
    while not events:
        await asyncio.sleep(0.05)
    assert events[0][0] == "state"
    assert events[0][1]["status"] == "awaiting_upload"

    data = zip_folder(mdi_set(tmp_path / "set", 6))
    assert await post_form(form, data) == 204
    await Pipeline(aws, db).run_all()
    await asyncio.wait_for(reader, 30)

    names = [name for name, _ in events if name != "comment"]
    images = [data for name, data in events if name == "image"]
    assert len(images) == 6, names
    assert {image["status"] for image in images} == {"ready"}
    assert all(image["preview"].startswith(state.settings.public_base()) for image in images)
    # Each image as it finished, then the product, the mosaic, the index, done.
    assert names.index("product") > max(i for i, n in enumerate(names) if n == "image")
    assert names.index("product") < names.index("mosaic") < names.index("indexed")
    assert names[-1] == "done"
    done = events[-1][1]
    assert done["status"] == "ready"
    assert done["files"]["ready"] == 6
    assert done["indexed"]
    assert done["mosaic"]
    # One watch for the upload, closed with the stream.
    assert state.hub.watches == {}

    # The pipeline's trace continues from the API request; the upload id is the pipeline's.
    upload = await upload_row(db, form["key"])
    assert upload["trace_id"] == form["trace_id"]
    by_form = await (await client.get(f"/v1/uploads/{form['id']}", headers=headers)).json()
    by_id = await (await client.get(f"/v1/uploads/{upload['id']}", headers=headers)).json()
    assert by_form["upload_id"] == by_id["upload_id"] == str(upload["id"])
    assert by_form["finished"]
    assert by_form["status"] == "ready"
    assert [f["status"] for f in by_form["files"]] == ["ready"] * 6

    # A finished upload's stream: its state, done, and the end.
    stream = await client.get(f"/v1/uploads/{form['id']}/events", headers=headers)
    again = [name async for name, _ in sse_events(stream) if name != "comment"]
    assert again == ["state", "done"]

    # Public: the product and its family, with URLs under the public base.
    product_id = by_form["product"]["id"]
    product = await (await client.get(f"/v1/products/{product_id}")).json()
    assert len(product["images"]) == 6
    base = state.settings.public_base()
    for image in product["images"]:
        assert image["renditions"]
        assert all(r["url"].startswith(base + "/renditions/") for r in image["renditions"])
    assert product["mosaic"]["png"].startswith(base + "/")
    family = await (await client.get(f"/v1/families/{product['family']['slug']}")).json()
    assert [p["id"] for p in family["products"]] == [product_id]
    assert family["mosaic"] == product["mosaic"]
    # The objects are where the URLs say (path-style on moto).
    key = product["images"][0]["renditions"][0]["url"].removeprefix(base + "/")
    assert (await aws.s3.head_object(Bucket=state.settings.previews_bucket, Key=key))[
        "ContentLength"
    ] > 0


async def test_a_refused_set_and_failed_files_are_told_with_their_reasons(
    api: tuple[Client, Api], aws: Aws, db: asyncpg.Pool
) -> None:
    client, _ = api
    headers = await key_for(db, "acme")
    files = svgs(2)
    archive = make_zip(
        {
            "manifest.json": manifest([*files, "broken.svg"], family="api-family"),
            **files,
            "broken.svg": b"<svg><script>alert(1)</script></svg>",
        }
    )
    form = await (await client.post("/v1/uploads", headers=headers)).json()
    assert await post_form(form, archive) == 204
    stream = await client.get(f"/v1/uploads/{form['id']}/events", headers=headers)
    pipeline = asyncio.create_task(Pipeline(aws, db).run_all())
    events = []
    async for event in sse_events(stream):
        events.append(event)
        if event[0] == "done":
            break
    await pipeline
    statuses = {}
    for name, data in events:
        if name == "state":
            statuses.update({f["path"]: (f["status"], f["reason"]) for f in data["files"]})
        elif name == "image":
            statuses[data["path"]] = (data["status"], data["reason"])
    assert statuses["broken.svg"][0] == "refused"
    assert statuses["broken.svg"][1]
    assert sorted(s for s, _ in statuses.values()) == ["ready", "ready", "refused"]

    bad = await (await client.post("/v1/uploads", headers=headers)).json()
    assert await post_form(bad, make_zip({"readme.txt": "no manifest"})) == 204
    await Pipeline(aws, db).run_all()
    status = await (await client.get(f"/v1/uploads/{bad['id']}", headers=headers)).json()
    assert status["status"] == "rejected"
    assert "manifest" in status["reason"]
    assert status["finished"]


async def test_many_clients_of_one_upload_share_one_read_per_change(
    api: tuple[Client, Api], aws: Aws, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, state = api
    headers = await key_for(db, "acme")
    form = await (await client.post("/v1/uploads", headers=headers)).json()
    streams = [
        await client.get(f"/v1/uploads/{form['id']}/events", headers=headers) for _ in range(3)
    ]

    async def until_done(stream: aiohttp.ClientResponse) -> list[str]:
        return [name async for name, _ in sse_events(stream) if name != "comment"]

    readers = [asyncio.create_task(until_done(s)) for s in streams]
    await asyncio.sleep(0.2)
    assert len(state.hub.watches) == 1
    (watch,) = state.hub.watches.values()
    assert await post_form(form, zip_folder(mdi_set(tmp_path / "set", 3))) == 204
    await Pipeline(aws, db).run_all()
    seen = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert all(names[-1] == "done" and names.count("image") == 3 for names in seen)
    assert watch.reads <= state.hub.notifications + 1  # one read per notification at most


async def test_unpublished_and_unknown_products_are_not_found(
    api: tuple[Client, Api], aws: Aws, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, _ = api
    headers = await key_for(db, "acme")
    form = await (await client.post("/v1/uploads", headers=headers)).json()
    assert await post_form(form, zip_folder(mdi_set(tmp_path / "set", 2))) == 204
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    product_id = await db.fetchval("SELECT id FROM products")
    family = await db.fetchval("SELECT slug FROM families")
    response = await client.get(f"/v1/products/{product_id}")  # still processing
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    assert (await client.get(f"/v1/families/{family}")).status == 404
    assert (await client.get(f"/v1/products/{uuid.uuid4()}")).status == 404
    assert (await client.get("/v1/products/nope")).status == 400
    assert (await client.get("/v1/nothing-here")).status == 404
    response = await client.delete("/v1/uploads")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    await pipeline.run_all()
    assert (await client.get(f"/v1/products/{product_id}")).status == 200


# --- the process ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def test_the_api_runs_as_a_process_with_health_and_metrics(
    settings: IngestSettings, aws: Aws, db: asyncpg.Pool
) -> None:
    api_port, health_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "INGEST_DATABASE_URL": settings.database_url,
        "INGEST_AWS_ENDPOINT_URL": str(settings.aws_endpoint_url),
        "INGEST_API_PORT": str(api_port),
        "INGEST_HEALTH_PORT": str(health_port),
        "INGEST_API_HOST": "127.0.0.1",
        "INGEST_HEALTH_HOST": "127.0.0.1",
        "INGEST_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ingest_api"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                status, body = await asyncio.to_thread(
                    _get, f"http://127.0.0.1:{health_port}/readyz"
                )
            except OSError:
                status, body = 0, None
            if status == 200:
                break
            assert time.monotonic() < deadline, f"not ready: {status} {body}"
            await asyncio.sleep(0.2)
        assert body["dependencies"]["postgres"]["up"]
        assert body["dependencies"]["s3"]["up"]
        status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{health_port}/healthz")
        assert status == 200
        assert body["alive"]
        status, body = await asyncio.to_thread(
            _get, f"http://127.0.0.1:{api_port}/v1/products/{uuid.uuid4()}"
        )
        assert status == 404
        assert body["error"]["code"] == "not_found"
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics") as response:
            assert b"http_server_request_duration" in response.read()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- the command ------------------------------------------------------------------------------


def _contributors(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INGEST_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "ingest_cli", "contributors", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_ingest_contributors_create_list_revoke(
    api: tuple[Client, Api], database_url: str
) -> None:
    client, _ = api
    created = await asyncio.to_thread(_contributors, database_url, "create", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ik_")
    assert "not shown again" in created.stderr
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.post("/v1/uploads", headers=headers)).status == 201

    listed = await asyncio.to_thread(_contributors, database_url, "list")
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if line.startswith("acme ")]
    prefix = line.split()[1]
    assert key.startswith(prefix)
    assert key not in listed.stdout  # only the prefix is ever shown again

    revoked = await asyncio.to_thread(_contributors, database_url, "revoke", prefix)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.post("/v1/uploads", headers=headers)).status == 401
    unknown = await asyncio.to_thread(_contributors, database_url, "revoke", "ik_nothing")
    assert unknown.returncode == 1
    refused = await asyncio.to_thread(_contributors, database_url, "create", "Not A Slug")
    assert refused.returncode == 2
    assert "contributor's name" in refused.stderr


async def test_search_is_public_and_answers_as_ingest_search_does(
    api: tuple[Client, Api], aws: Aws, db: asyncpg.Pool, settings: IngestSettings
) -> None:
    client, state = api
    files = svgs(3)
    await aws.put_bytes(
        settings.uploads_bucket,
        "uploads/acme/set.zip",
        make_zip({"manifest.json": manifest(list(files)), **files}),
        content_type="application/zip",
    )
    await Pipeline(aws, db).run_all()
    icon = "alpha"  # alpha-q-circle-outline.svg, the second of the three
    assert any(name.startswith(icon) for name in files)

    response = await client.get("/v1/search", params={"q": icon, "type": "icon"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["total"] >= 1
    hit = body["hits"][0]
    assert hit["type"] == "icon"
    assert hit["renditions_url"].startswith(state.settings.public_base())
    assert hit["product_url"] == f"/v1/products/{hit['product_id']}"
    assert {f["value"] for f in body["facets"]["license"]}, "facets come with the hits"

    cli = run_ingest(settings, "search", icon, "--type", "icon", "--json")
    from_cli = json.loads(cli.stdout)
    assert [h["image_id"] for h in from_cli["hits"]] == [h["image_id"] for h in body["hits"]]

    for params, word in (({"limit": "100000"}, "limit"), ({"colour": "red"}, "colour")):
        refused = await client.get("/v1/search", params=params)
        assert refused.status == 400
        error = (await refused.json())["error"]
        assert error["code"] == "invalid_query"
        assert word in error["message"]
