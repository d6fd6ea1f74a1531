"""The routes of the HTTP API.

| route | who | what |
|---|---|---|
| `POST /v1/uploads` | contributor | a presigned S3 POST form for `uploads/<contributor>/<id>.zip` |
| `GET /v1/uploads/{id}` | contributor | the upload's state, file by file, with every reason |
| `GET /v1/uploads/{id}/events` | contributor | the same, live (Server-Sent Events) until done |
| `GET /v1/products/{id}` | anyone | a published product: its ready images' renditions |
| `GET /v1/families/{slug}` | anyone | a family's mosaic and published products |
| `GET /v1/search` | anyone | icons and sets with facets: the search `ingest search` runs |
| `GET /`, `/static/...` | anyone | the contributor page (ingest_api.web) |

`{id}` of an upload is the id `POST /v1/uploads` answered (the object's name; known
before the object exists) or the upload's own id (derived from the object's ETag, as
`ingest upload` prints it). A contributor sees only their own uploads: any other id is
404, as if it did not exist. Published means searchable: a product whose ready images the
index holds (search_documents); only its ready images are shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from botocore.exceptions import ClientError
from ingest_common.apikeys import authenticate
from ingest_common.aws import Aws
from ingest_common.search import SearchQuery, describe_errors, search
from ingest_common.telemetry.tracing import (
    TRACE_KEYS,
    context_from_carrier,
    current_carrier,
    format_trace_id,
    instrumented_calls_under,
    tracer,
)
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from ingest_api.errors import HTTP_CODES, ApiError, error_response, not_found, unauthenticated
from ingest_api.progress import ProgressHub, Target, View, changes, read_view, resolve
from ingest_api.settings import ApiSettings
from ingest_api.web import add_page_routes

log = structlog.get_logger("ingest.api")

ZIP = "application/zip"
MAX_BODY = 64 * 1024  # bytes of a request body (the API takes small JSON; files go to S3)

_meter = metrics.get_meter("ingest")
request_duration = _meter.create_histogram(
    "http.server.request.duration",
    unit="s",
    description="time to answer an API request (an event stream: how long it stayed open)",
    explicit_bucket_boundaries_advisory=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True)
class Api:
    settings: ApiSettings
    db: asyncpg.Pool
    aws: Aws
    hub: ProgressHub


API: web.AppKey[Api] = web.AppKey("api", Api)
CONTRIBUTOR: web.RequestKey[str] = web.RequestKey("contributor", str)


def build_app(api: Api) -> web.Application:
    app = web.Application(middlewares=[telemetry, errors], client_max_size=MAX_BODY)
    app[API] = api
    app.router.add_post("/v1/uploads", create_upload)
    app.router.add_get("/v1/uploads/{id}", get_upload)
    app.router.add_get("/v1/uploads/{id}/events", upload_events)
    app.router.add_get("/v1/products/{id}", get_product)
    app.router.add_get("/v1/families/{slug}", get_family)
    app.router.add_get("/v1/search", search_catalogue)
    # The contributor page (`/`, `/static/...`), with its Content-Security-Policy.
    add_page_routes(app, api.settings)
    return app


def hub_reader(
    settings: ApiSettings, db: asyncpg.Pool, aws: Aws
) -> Callable[[Target], Awaitable[View]]:
    """How an upload's view is read (by the hub, for its watchers, and by GET)."""

    async def exists(bucket: str, key: str) -> bool:
        return await object_exists(aws, bucket, key)

    async def read(target: Target) -> View:
        async with db.acquire() as connection:
            return await read_view(connection, target, settings.public_url, exists)

    return read


async def object_exists(aws: Aws, bucket: str, key: str) -> bool:
    try:
        await aws.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return False
        raise
    return True


# --- middlewares ------------------------------------------------------------------------------


@web.middleware
async def telemetry(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A SERVER span per request (continuing the client's trace if it sent one), its
    duration as a metric, and one log line."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    carrier = {k: request.headers[k] for k in TRACE_KEYS if k in request.headers}
    started = time.monotonic()
    status = 500
    with tracer().start_as_current_span(
        f"{request.method} {route}",
        context=context_from_carrier(carrier),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
        },
    ) as span:
        try:
            with instrumented_calls_under(span):
                response = await handler(request)
            status = response.status
            return response
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            seconds = time.monotonic() - started
            attributes = {"http.request.method": request.method, "http.route": route}
            request_duration.record(seconds, {**attributes, "http.response.status_code": status})
            log.info(
                "api.request",
                method=request.method,
                route=route,
                status=status,
                seconds=round(seconds, 4),
                contributor=request.get(CONTRIBUTOR),
            )


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = HTTP_CODES.get(exc.status, ("error", exc.reason))
        return error_response(exc.status, code, message)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api.failed", method=request.method, path=request.path)
        trace_id = format_trace_id(trace.get_current_span().get_span_context())
        return error_response(
            500,
            "internal",
            "something went wrong on our side; it is logged, try again later",
            trace_id=trace_id,
        )


# --- authentication -----------------------------------------------------------------------------


async def contributor_of(request: web.Request) -> str:
    """The contributor whose key the request carries (`Authorization: Bearer <key>`)."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise unauthenticated(
            "this needs an API key: send it as the header 'Authorization: Bearer <key>'"
            " (`ingest contributors create NAME` makes one)",
            invalid=False,
        )
    if scheme.lower() != "bearer" or not key.strip():
        raise unauthenticated(
            "the Authorization header must be 'Bearer <key>'",
            invalid=True,
        )
    async with request.app[API].db.acquire() as connection:
        contributor = await authenticate(connection, key.strip())
    if contributor is None:
        raise unauthenticated(
            "this API key is not valid: it may be mistyped or revoked", invalid=True
        )
    request[CONTRIBUTOR] = contributor
    trace.get_current_span().set_attribute("ingest.contributor", contributor)
    return contributor


def _uuid(request: web.Request, what: str) -> uuid.UUID:
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, "invalid_id", f"{raw!r} is not {what} id (a UUID)") from None


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"


# --- uploads ------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


async def create_upload(request: web.Request) -> web.Response:
    """An upload form: the client POSTs its ZIP straight to S3 with these fields.

    Optional body: `{"size": bytes, "content_type": "application/zip"}`, to be told now
    rather than by S3 that the file cannot be accepted.
    """
    contributor = await contributor_of(request)
    api = request.app[API]
    settings = api.settings
    body = await _json_body(request)
    unknown = sorted(set(body) - {"size", "content_type"})
    if unknown:
        raise ApiError(
            422, "invalid_field", f"unknown field {unknown[0]!r}: only size and content_type"
        )
    size = body.get("size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ApiError(422, "invalid_field", "size: expected a whole number of bytes")
        if size == 0:
            raise ApiError(422, "empty", "the file is empty: a set is a ZIP of SVGs")
        if size > settings.max_archive_bytes:
            raise ApiError(
                413,
                "too_large",
                f"the ZIP is {_mib(size)}, larger than the {_mib(settings.max_archive_bytes)}"
                " limit",
                limit=settings.max_archive_bytes,
            )
    content_type = body.get("content_type", ZIP)
    if content_type != ZIP:
        raise ApiError(
            422,
            "unsupported_type",
            f"a set is uploaded as a ZIP archive (content type {ZIP}), not {content_type!r}",
        )

    form_id = uuid.uuid4()
    key = f"uploads/{contributor}/{form_id}.zip"
    # The pipeline's trace continues from this request: the batcher reads the object's
    # x-amz-meta-traceparent, which the form makes the client send (and S3 requires).
    carrier = current_carrier()
    span = trace.get_current_span()
    span.set_attribute("ingest.object_key", key)
    fields: dict[str, str] = {"Content-Type": ZIP}
    conditions: list[Any] = [
        {"Content-Type": ZIP},
        ["content-length-range", 1, settings.max_archive_bytes],
    ]
    for name in TRACE_KEYS:
        if carrier.get(name):
            fields[f"x-amz-meta-{name}"] = carrier[name]
            conditions.append({f"x-amz-meta-{name}": carrier[name]})
    expires_in = settings.api_upload_expires
    post = await api.aws.s3.generate_presigned_post(
        Bucket=settings.uploads_bucket,
        Key=key,
        Fields=fields,
        Conditions=conditions,
        ExpiresIn=expires_in,
    )
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    trace_id = format_trace_id(span.get_span_context()) if carrier else None
    await api.db.execute(
        """INSERT INTO upload_forms (id, contributor_id, bucket, object_key, trace_id, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        form_id,
        contributor,
        settings.uploads_bucket,
        key,
        trace_id,
        expires_at,
    )
    log.info("api.upload_form", contributor=contributor, key=key)
    return web.json_response(
        {
            "id": str(form_id),
            "key": key,
            "upload": {"url": post["url"], "method": "POST", "fields": post["fields"]},
            "content_type": ZIP,
            "max_bytes": settings.max_archive_bytes,
            "expires_in": expires_in,
            "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
            "trace_id": trace_id,
            "status_url": f"/v1/uploads/{form_id}",
            "events_url": f"/v1/uploads/{form_id}/events",
        },
        status=201,
        headers={"Location": f"/v1/uploads/{form_id}"},
    )


async def _target(request: web.Request) -> Target:
    contributor = await contributor_of(request)
    ref = _uuid(request, "an upload")
    async with request.app[API].db.acquire() as connection:
        target = await resolve(connection, contributor, ref)
    if target is None:
        raise not_found(f"you have no upload {ref}")
    return target


async def get_upload(request: web.Request) -> web.Response:
    target = await _target(request)
    api = request.app[API]
    return web.json_response(await api.hub.read(target))


def sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def upload_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: `state` (the whole view) first, on every connection — so a client
    that reconnects, with or without Last-Event-ID, is in step again — then `upload`,
    `image`, `product`, `mosaic`, `indexed` as they happen, `done`, and the end of the
    stream. A comment every INGEST_API_HEARTBEAT_INTERVAL seconds keeps proxies from
    closing an idle stream."""
    target = await _target(request)
    api = request.app[API]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies (nginx) must not buffer the stream
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 3000\n\n")
    sent: View | None = None
    event_id = 0
    deadline = time.monotonic() + api.settings.api_stream_timeout
    async with api.hub.subscribe(target) as (watch, subscriber):
        while time.monotonic() < deadline and not api.hub.closing.is_set():
            wait = min(api.settings.api_heartbeat_interval, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wait)):
                    await _first(subscriber.changed.wait(), api.hub.closing.wait())
            if not subscriber.changed.is_set() or watch.view is None:
                await response.write(b": keep-alive\n\n")
                continue
            subscriber.changed.clear()
            current = watch.view
            finished = False
            for name, data in changes(sent, current):
                event_id += 1
                await response.write(sse(name, data, event_id))
                finished = finished or name == "done"
            sent = current
            if finished:
                break
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


# --- published products and families -----------------------------------------------------------

_PUBLISHED = "EXISTS (SELECT 1 FROM search_documents sd WHERE sd.product_id = p.id)"

_PRODUCT = f"""
SELECT p.id, p.title, p.description, p.tags, p.product_type::text AS product_type, p.license,
       p.contributor_id, p.images_ready, p.completed_at, f.slug AS family, f.name AS family_name,
       fp.png_key, fp.webp_key, fp.width AS mosaic_width, fp.height AS mosaic_height
  FROM products p JOIN families f ON f.id = p.family_id
  LEFT JOIN family_previews fp ON fp.family_id = p.family_id
 WHERE p.id = $1 AND {_PUBLISHED}
"""
_IMAGES = """
SELECT id, title, tags, width, height, renditions FROM images
 WHERE product_id = $1 AND status = 'ready' ORDER BY position
"""
_FAMILY = """
SELECT f.id, f.slug, f.name, f.contributor_id,
       fp.png_key, fp.webp_key, fp.width AS mosaic_width, fp.height AS mosaic_height,
       fp.updated_at AS mosaic_updated_at
  FROM families f LEFT JOIN family_previews fp ON fp.family_id = f.id
 WHERE f.slug = $1
"""
_FAMILY_PRODUCTS = f"""
SELECT p.id, p.title, p.product_type::text AS product_type, p.license, p.images_ready,
       d.cover_key
  FROM products p JOIN product_documents d ON d.product_id = p.id
 WHERE p.family_id = $1 AND {_PUBLISHED}
 ORDER BY p.created_at, p.id
"""


def _mosaic(api: Api, row: asyncpg.Record) -> dict[str, Any] | None:
    if not row["png_key"]:
        return None
    return {
        "png": api.settings.public_url(row["png_key"]),
        "webp": api.settings.public_url(row["webp_key"]),
        "width": row["mosaic_width"],
        "height": row["mosaic_height"],
    }


async def get_product(request: web.Request) -> web.Response:
    api = request.app[API]
    product_id = _uuid(request, "a product")
    async with api.db.acquire() as connection:
        product = await connection.fetchrow(_PRODUCT, product_id)
        images = await connection.fetch(_IMAGES, product_id) if product else []
    if product is None:
        raise not_found(f"no published product {product_id}")
    url = api.settings.public_url
    return web.json_response(
        {
            "id": str(product["id"]),
            "title": product["title"],
            "description": product["description"],
            "tags": list(product["tags"]),
            "product_type": product["product_type"],
            "license": product["license"],
            "contributor": product["contributor_id"],
            "family": {
                "slug": product["family"],
                "name": product["family_name"],
                "url": f"/v1/families/{product['family']}",
            },
            "mosaic": _mosaic(api, product),
            "images": [
                {
                    "id": str(image["id"]),
                    "title": image["title"],
                    "tags": list(image["tags"]),
                    "width": image["width"],
                    "height": image["height"],
                    "renditions": [
                        {
                            "width": r["width"],
                            "height": r["height"],
                            "format": r["format"],
                            "bytes": r.get("bytes"),
                            "url": url(r["key"]),
                        }
                        for r in sorted(
                            image["renditions"], key=lambda r: (r["format"], r["width"])
                        )
                    ],
                }
                for image in images
            ],
        }
    )


async def get_family(request: web.Request) -> web.Response:
    api = request.app[API]
    slug = request.match_info["slug"]
    async with api.db.acquire() as connection:
        family = await connection.fetchrow(_FAMILY, slug)
        products = await connection.fetch(_FAMILY_PRODUCTS, family["id"]) if family else []
    if family is None or not products:
        raise not_found(f"no published family {slug!r}")
    url = api.settings.public_url
    return web.json_response(
        {
            "slug": family["slug"],
            "name": family["name"],
            "contributor": family["contributor_id"],
            "mosaic": _mosaic(api, family),
            "products": [
                {
                    "id": str(p["id"]),
                    "title": p["title"],
                    "product_type": p["product_type"],
                    "license": p["license"],
                    "images": p["images_ready"],
                    "cover": url(p["cover_key"]) if p["cover_key"] else None,
                    "url": f"/v1/products/{p['id']}",
                }
                for p in products
            ],
        }
    )


# --- search -------------------------------------------------------------------------------------


async def search_catalogue(request: web.Request) -> web.Response:
    """`GET /v1/search?q=...&type=icon|set&license=...&family=...&contributor=...
    &product_type=...&limit=...&offset=...`: the one search `ingest search` runs too."""
    api = request.app[API]
    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if repeated:
        raise ApiError(400, "invalid_query", f"give each parameter once: {', '.join(repeated)}")
    try:
        query = SearchQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        problems = describe_errors(exc)
        raise ApiError(400, "invalid_query", "; ".join(problems), problems=problems) from exc
    async with api.db.acquire() as connection:
        results = await search(connection, query)
    body = results.model_dump(mode="json")
    url = api.settings.public_url
    for hit in body["hits"]:
        # Where a client fetches what it shows: URLs, not bucket keys.
        hit["renditions_url"] = url(hit["renditions"]) if hit.get("renditions") else None
        key = hit.get("family_preview_key")
        hit["family_preview_url"] = url(key) if key else None
        hit["product_url"] = f"/v1/products/{hit['product_id']}"
    return web.json_response(body)
