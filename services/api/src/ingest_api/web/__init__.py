"""The contributor page: static HTML, CSS and JavaScript modules, served by the API itself.

`GET /` is the page, `GET /static/<file>` its parts (files of `web/static/`, shipped in the
wheel as package data). The page talks to the API on its own origin, sends the ZIP straight
to the uploads bucket with the presigned form, and shows renditions from the public base
(`INGEST_PUBLIC_BASE_URL`, or the previews bucket). Its Content-Security-Policy allows that
and nothing else: no inline script or style, no other origin.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from ingest_api.settings import ApiSettings

STATIC = "static"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def origin(url: str) -> str:
    """scheme://host[:port] of a URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def uploads_origins(settings: ApiSettings) -> list[str]:
    """Where the presigned form sends the ZIP: the endpoint's origin (moto, MinIO: path-style)
    or the bucket's virtual host on S3 (the global name, as botocore signs it, and the
    regional one)."""
    if settings.aws_endpoint_url:
        return [origin(settings.aws_endpoint_url)]
    bucket = settings.uploads_bucket
    return [
        f"https://{bucket}.s3.amazonaws.com",
        f"https://{bucket}.s3.{settings.aws_region}.amazonaws.com",
    ]


def content_security_policy(settings: ApiSettings) -> str:
    """Self only; images also from the public base (renditions, mosaics), connections also
    to the uploads bucket (the form's POST, by XMLHttpRequest)."""
    images = " ".join(dict.fromkeys(["'self'", origin(settings.public_base())]))
    connect = " ".join(dict.fromkeys(["'self'", *uploads_origins(settings)]))
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            f"connect-src {connect}",
            "font-src 'none'",
            "object-src 'none'",
            "media-src 'none'",
            "frame-src 'none'",
            "worker-src 'none'",
            "manifest-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",  # the page's forms are handled by script; nothing navigates
            "frame-ancestors 'none'",
        ]
    )


def load_assets() -> dict[str, Asset]:
    """Every file of web/static (small: read once), by its path under /static/."""
    assets: dict[str, Asset] = {}

    def walk(folder: resources.abc.Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rpartition(".")[2]
            content_type = TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0]
            if content_type is None:
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[prefix + entry.name] = Asset(body, content_type, etag)

    walk(resources.files(__name__).joinpath(STATIC), "")
    return assets


def add_page_routes(app: web.Application, settings: ApiSettings) -> None:
    """`GET /` and `GET /static/{path}`, each with the page's security headers."""
    assets = load_assets()
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        # Revalidated each time (an ETag answers 304): a new release is seen at once.
        "Cache-Control": "no-cache",
    }

    def serve(name: str, request: web.Request) -> web.Response:
        asset = assets.get(name)
        if asset is None:
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers={**headers, "ETag": asset.etag})
        return web.Response(
            body=asset.body,
            headers={**headers, "Content-Type": asset.content_type, "ETag": asset.etag},
        )

    async def page(request: web.Request) -> web.Response:
        return serve("index.html", request)

    async def static(request: web.Request) -> web.Response:
        return serve(request.match_info["path"], request)

    app.router.add_get("/", page)
    app.router.add_get("/static/{path:.+}", static)
