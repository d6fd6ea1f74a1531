"""The contributor page in a real browser: Debian's Chromium, headless, driven by Selenium
through Debian's ChromeDriver (nothing downloads a browser: tools/ensure_browser.sh installs
both, `make test` runs it first).

The API serves the page on a real loopback port, in the test's event loop; Chromium loads
it, sends the ZIP straight to the moto server (another origin: the uploads bucket's CORS
rule answers the browser's preflight), and follows the event stream while the real
handlers drain their queues in the same loop. Selenium's calls block, so they run in
threads (`Page`): the loop keeps serving the API and the pipeline meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from botocore.exceptions import ClientError
from ingest_api.app import Api, build_app, hub_reader
from ingest_api.progress import ProgressHub
from ingest_api.settings import ApiSettings
from ingest_cli.zipping import zip_folder
from ingest_common.apikeys import create_key
from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings
from ingest_common.topology import apply_topology, load_topology
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.integration.pipeline import Pipeline, make_zip, manifest, mdi_set, settings_from, svgs

CHROMIUM = Path(os.environ.get("INGEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("INGEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = Path("/tmp/contributor-page.png")  # the latest full run, for people to look at

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason=f"no {CHROMIUM} or {CHROMEDRIVER}: run tools/ensure_browser.sh (make test does)",
)

T = TypeVar("T")


# --- the API on a real port ----------------------------------------------------------------


@dataclass
class ApiServer:
    """The API app on 127.0.0.1, stoppable and restartable on the same port (a lost
    connection, as the page sees it)."""

    settings: ApiSettings
    db: asyncpg.Pool
    aws: Aws
    port: int = 0
    runner: web.AppRunner | None = None
    listener: asyncio.Task[None] | None = None
    hub: ProgressHub | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        hub = ProgressHub(self.settings, hub_reader(self.settings, self.db, self.aws))
        self.hub = hub
        self.listener = asyncio.create_task(hub.run())
        await asyncio.wait_for(hub.listening.wait(), 10)
        self.runner = web.AppRunner(build_app(Api(self.settings, self.db, self.aws, hub)))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.hub is not None:
            self.hub.closing.set()  # event streams end, as when the process stops
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.listener is not None:
            self.listener.cancel()
            await asyncio.gather(self.listener, return_exceptions=True)
            self.listener = None


ServeApi = Callable[..., Awaitable[ApiServer]]


@pytest.fixture
async def serve_api(
    settings: IngestSettings, aws: Aws, db: asyncpg.Pool
) -> AsyncIterator[ServeApi]:
    """`await serve_api(**api_settings)`: the API with these settings, on a free port."""
    servers: list[ApiServer] = []

    async def serve(**overrides: Any) -> ApiServer:
        api_settings = settings_from(
            ApiSettings,
            settings,
            **{"api_upload_expires": 600, "api_heartbeat_interval": 2.0, **overrides},
        )
        server = ApiServer(api_settings, db, aws)
        servers.append(server)
        await server.start()
        return server

    try:
        yield serve
    finally:
        for server in servers:
            await server.stop()


@asynccontextmanager
async def pipeline_running(aws: Aws, db: asyncpg.Pool) -> AsyncIterator[None]:
    """The four handlers draining their queues over and over, in this loop, until the block
    ends: whatever the page uploads goes all the way through."""

    async def drain_forever() -> None:
        pipeline = Pipeline(aws, db)
        while True:
            await pipeline.run_all()
            await asyncio.sleep(0.1)

    task = asyncio.create_task(drain_forever())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def key_for(db: asyncpg.Pool, contributor: str) -> str:
    async with db.acquire() as connection:
        _, key = await create_key(connection, contributor)
    return key


@pytest.fixture
async def cdn_url(aws: Aws) -> AsyncIterator[str]:
    """A stand-in for the CDN in front of the previews bucket (CloudFront with an origin
    access control: the bucket stays private, the CDN reads it with its own rights), on its
    own origin: what INGEST_PUBLIC_BASE_URL names in a deployment."""

    async def get(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            body = await aws.get_bytes(aws.settings.previews_bucket, key)
        except ClientError:
            raise web.HTTPNotFound() from None
        content_type = {"png": "image/png", "webp": "image/webp"}.get(key.rpartition(".")[2])
        return web.Response(body=body, content_type=content_type or "application/octet-stream")

    app = web.Application()
    app.router.add_get("/{key:.+}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def previews_public(aws: Aws) -> None:
    """Let anyone read the previews bucket (the other way to serve it: no CDN, the API's
    URLs are the bucket's own). moto, like S3, refuses an anonymous GET of a private object."""
    bucket = aws.settings.previews_bucket
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    await aws.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


# --- the browser ---------------------------------------------------------------------------


def chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root, in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path given, Selenium skips Selenium Manager: nothing is looked up or
    # downloaded.
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@dataclass
class Page:
    """The browser, called from threads (Selenium blocks; the loop serves the API)."""

    driver: webdriver.Chrome
    console: list[dict[str, Any]] = field(default_factory=list)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)
        await self.wait_for(
            "document.documentElement.dataset.ready === 'true'", "the page's script"
        )

    async def js(self, script: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, script, *args)

    async def text(self, css: str) -> str:
        value = await self.js("return document.querySelector(arguments[0]).innerText", css)
        return str(value)

    async def visible(self, css: str) -> bool:
        element = await self.call(self.driver.find_element, By.CSS_SELECTOR, css)
        return bool(await self.call(element.is_displayed))

    async def type(self, css: str, *keys: str) -> None:
        element = await self.call(self.driver.find_element, By.CSS_SELECTOR, css)
        await self.call(element.send_keys, *keys)

    async def click(self, css: str) -> None:
        element = await self.call(self.driver.find_element, By.CSS_SELECTOR, css)
        await self.call(element.click)

    async def wait_for(self, condition: str, what: str, timeout: float = 20) -> Any:
        """Poll a JavaScript expression until it is truthy; fail with the page's text."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(f"return ({condition})")
            if value:
                return value
            if time.monotonic() > deadline:
                body = await self.text("main")
                raise AssertionError(f"{what}: not within {timeout} s. The page says:\n{body}")
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        """The whole page (the window grown to its height)."""
        height = await self.js("return document.documentElement.scrollHeight")
        width = await self.js("return window.outerWidth")
        await self.call(self.driver.set_window_size, width, int(height) + 120)
        await self.call(self.driver.save_screenshot, str(path))

    async def logs(self) -> list[dict[str, Any]]:
        self.console.extend(await self.call(self.driver.get_log, "browser"))
        return self.console


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    driver = chromium(profile)
    try:
        yield Page(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def csp_violations(logs: list[dict[str, Any]]) -> list[str]:
    return [
        str(entry["message"])
        for entry in logs
        if "Content Security Policy" in str(entry.get("message", ""))
        or "Refused to" in str(entry.get("message", ""))
    ]


async def enter_key(page: Page, key: str) -> None:
    """Type the key and press Enter (the form works from the keyboard)."""
    await page.type("#key-input", key, Keys.ENTER)


async def file_rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await page.js(
        """return [...document.querySelectorAll('#files .file')].map(row => {
             const img = row.querySelector('.thumb img');
             return {path: row.dataset.path, status: row.dataset.status, text: row.innerText,
                     img: img && {src: img.src, loaded: img.complete && img.naturalWidth > 0}};
           })"""
    )
    return rows


def sample_zip(tmp_path: Path, count: int = 6) -> Path:
    path = tmp_path / "mdi-essentials.zip"
    path.write_bytes(zip_folder(mdi_set(tmp_path / "set", count)))
    return path


# --- the tests -----------------------------------------------------------------------------


async def test_an_upload_from_the_page_shows_each_image_as_it_is_ready(
    serve_api: ServeApi, aws: Aws, db: asyncpg.Pool, page: Page, cdn_url: str, tmp_path: Path
) -> None:
    api = await serve_api(public_base_url=cdn_url)
    # The bucket lets exactly this page's origin POST to it (not "*"): the browser's
    # preflight is answered by that rule.
    await apply_topology(
        aws, load_topology(settings_from(ApiSettings, aws.settings, api_cors_origins=[api.url]))
    )
    key = await key_for(db, "acme")
    archive = sample_zip(tmp_path)

    async with aiohttp.ClientSession() as session, session.get(f"{api.url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert f"connect-src 'self' {aws.settings.aws_endpoint_url}" in policy
    assert f"img-src 'self' {cdn_url};" in policy

    started = time.monotonic()
    await page.open(api.url)
    assert not await page.visible("#upload-section")
    await enter_key(page, key)
    await page.wait_for("!document.getElementById('upload-section').hidden", "the key accepted")
    assert await page.js("return sessionStorage.getItem('ingest.apiKey')") == key
    assert await page.js("return document.activeElement.id") == "file-input"

    await page.type("#file-input", str(archive))
    assert "mdi-essentials.zip" in await page.text("#file-info")
    await page.click("#upload-button")
    await page.wait_for(
        "document.querySelector('[data-step=sent]').dataset.state === 'done'", "the ZIP sent"
    )
    assert await page.js("return document.getElementById('progress').value") == 100
    assert (await page.text("#progress-text")).startswith("100 %")
    assert "Uploading as acme" in await page.text("#who")
    stored = await aws.s3.list_objects_v2(
        Bucket=aws.settings.uploads_bucket, Prefix="uploads/acme/"
    )
    assert [o["Size"] for o in stored["Contents"]] == [archive.stat().st_size]

    # The API goes away under the open event stream: the page says so and retries.
    await api.stop()
    await page.wait_for(
        "document.getElementById('connection').innerText.includes('Connection to the API lost')",
        "the lost connection told",
    )
    await api.start()  # same port

    async with pipeline_running(aws, db):
        await page.wait_for(
            "document.querySelectorAll('#files .file[data-status=ready]').length >= 1",
            "a first image ready",
            timeout=60,
        )
        first_ready = time.monotonic() - started
        await page.wait_for(
            "document.getElementById('final').innerText.includes('searchable')",
            "the product searchable",
            timeout=120,
        )
    finished = time.monotonic() - started

    rows = await file_rows(page)
    assert len(rows) == 6
    assert {row["status"] for row in rows} == {"ready"}, rows
    await page.wait_for(
        "[...document.querySelectorAll('#files .thumb img')].every(i => i.complete && i.naturalWidth > 0)"
        " && document.querySelectorAll('#files .thumb img').length === 6",
        "every thumbnail loaded",
    )
    rows = await file_rows(page)
    assert all(row["img"]["src"].startswith(cdn_url + "/renditions/") for row in rows)
    await page.wait_for(
        "!document.getElementById('mosaic').hidden && document.getElementById('mosaic-img').complete"
        " && document.getElementById('mosaic-img').naturalWidth > 0",
        "the mosaic shown",
    )
    steps = await page.js(
        "return [...document.querySelectorAll('#steps li')].map(li => li.dataset.state)"
    )
    assert steps == ["done"] * 4
    assert "6 ready, 0 failed" in await page.text("#final")
    assert await page.text("#status") == "Done: the product is searchable."
    assert csp_violations(await page.logs()) == []

    await page.screenshot(tmp_path / "contributor-page.png")
    shutil.copy(tmp_path / "contributor-page.png", SCREENSHOT)
    # A phone's width: nothing wider than the screen.
    await page.call(page.driver.set_window_size, 390, 844)
    wider = await page.js(
        """const width = document.documentElement.clientWidth;
           return [window.innerWidth, width, [...document.querySelectorAll('body *')]
             .filter(e => e.getBoundingClientRect().right > width + 0.5)
             .map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className)]"""
    )
    assert wider[2] == [], f"wider than the {wider[1]} px screen: {wider}"
    await page.screenshot(tmp_path / "contributor-page-phone.png")
    shutil.copy(
        tmp_path / "contributor-page-phone.png", SCREENSHOT.with_name("contributor-page-phone.png")
    )
    print(f"first image ready after {first_ready:.1f} s, searchable after {finished:.1f} s")


async def test_a_wrong_key_is_told_in_words_and_a_key_can_be_forgotten(
    serve_api: ServeApi, db: asyncpg.Pool, page: Page
) -> None:
    api = await serve_api()
    await page.open(api.url)
    await enter_key(page, "ik_not-a-real-key-at-all")
    await page.wait_for("document.getElementById('key-error').innerText", "the key refused")
    message = await page.text("#key-error")
    assert "refused this key (401)" in message
    assert "not valid" in message
    assert "mistyped or revoked" in message
    assert not await page.visible("#upload-section")
    assert await page.js("return sessionStorage.getItem('ingest.apiKey')") is None

    key = await key_for(db, "acme")
    await page.js("document.getElementById('key-input').value = ''")
    await enter_key(page, key)
    await page.wait_for("!document.getElementById('upload-section').hidden", "the key accepted")
    assert await page.text("#key-error") == ""
    assert key[:11] in await page.text("#key-prefix")
    # Kept for the tab: a reload does not ask again.
    await page.open(api.url)
    assert await page.visible("#upload-section")
    await page.click("#forget-key")
    assert await page.visible("#key-input")
    assert not await page.visible("#upload-section")
    assert await page.js("return sessionStorage.getItem('ingest.apiKey')") is None


async def test_a_zip_over_the_limit_is_refused_before_it_is_sent(
    serve_api: ServeApi, aws: Aws, db: asyncpg.Pool, page: Page, tmp_path: Path
) -> None:
    api = await serve_api(max_archive_bytes=1000)  # INGEST_MAX_ARCHIVE_BYTES
    archive = sample_zip(tmp_path, 3)
    assert archive.stat().st_size > 1000
    await page.open(api.url)
    await enter_key(page, await key_for(db, "acme"))
    await page.wait_for("!document.getElementById('upload-section').hidden", "the key accepted")
    await page.type("#file-input", str(archive))
    await page.click("#upload-button")
    await page.wait_for("document.getElementById('upload-error').innerText", "the refusal")
    message = await page.text("#upload-error")
    assert "This ZIP is too large" in message
    assert f"{archive.stat().st_size:,} bytes, larger than the 1,000 bytes limit" in message
    assert await page.js("return document.activeElement.id") == "upload-error"
    stored = await aws.s3.list_objects_v2(Bucket=api.settings.uploads_bucket, Prefix="uploads/")
    assert stored.get("KeyCount", 0) == 0
    # The limit is known now: choosing the file again is refused at once, with no request.
    await page.js("document.getElementById('file-input').value = ''")
    await page.type("#file-input", str(archive))
    assert "larger than the 1,000 bytes limit" in await page.text("#upload-error")
    assert await page.js("return document.getElementById('upload-button').disabled")


async def test_storage_refusing_this_origin_is_told_in_words(
    serve_api: ServeApi, aws: Aws, db: asyncpg.Pool, page: Page, tmp_path: Path
) -> None:
    """The uploads bucket's CORS rule lists another origin: the browser's preflight is
    refused (moto evaluates the rule), nothing is stored, and the page says why."""
    api = await serve_api()
    only_the_shop = settings_from(
        ApiSettings, aws.settings, api_cors_origins=["https://shop.example"]
    )
    await apply_topology(aws, load_topology(only_the_shop))
    await page.open(api.url)
    await enter_key(page, await key_for(db, "acme"))
    await page.wait_for("!document.getElementById('upload-section').hidden", "the key accepted")
    await page.type("#file-input", str(sample_zip(tmp_path, 2)))
    await page.click("#upload-button")
    await page.wait_for("document.getElementById('upload-error').innerText", "the refusal")
    message = await page.text("#upload-error")
    assert "could not be sent to storage" in message
    assert "CORS" in message
    assert api.url in message
    step = await page.js("return document.querySelector('[data-step=sent]').dataset.state")
    assert step == "failed"
    stored = await aws.s3.list_objects_v2(Bucket=api.settings.uploads_bucket, Prefix="uploads/")
    assert stored.get("KeyCount", 0) == 0


async def test_a_broken_file_shows_its_reason_beside_the_ready_ones(
    serve_api: ServeApi, aws: Aws, db: asyncpg.Pool, page: Page, tmp_path: Path
) -> None:
    api = await serve_api()  # no CDN: the previews bucket's own URLs
    await previews_public(aws)
    files = svgs(2)
    archive = tmp_path / "with-a-broken-file.zip"
    archive.write_bytes(
        make_zip(
            {
                "manifest.json": manifest([*files, "broken.svg"], family="page-family"),
                **files,
                "broken.svg": b"<svg><script>alert(1)</script></svg>",
            }
        )
    )
    await page.open(api.url)
    await enter_key(page, await key_for(db, "acme"))
    await page.wait_for("!document.getElementById('upload-section').hidden", "the key accepted")
    await page.type("#file-input", str(archive))
    await page.click("#upload-button")
    async with pipeline_running(aws, db):
        await page.wait_for(
            "document.getElementById('final').innerText", "the end of the upload", timeout=120
        )
    rows = {row["path"]: row for row in await file_rows(page)}
    assert sorted(row["status"] for row in rows.values()) == ["ready", "ready", "refused"]
    await page.wait_for(
        "[...document.querySelectorAll('#files .thumb img')].every(i => i.complete && i.naturalWidth > 0)",
        "the ready files' thumbnails loaded",
    )
    assert all(
        row["img"]["src"].startswith(
            f"{aws.settings.aws_endpoint_url}/{api.settings.previews_bucket}/"
        )
        for row in rows.values()
        if row["status"] == "ready"
    )
    broken = rows["broken.svg"]
    assert broken["img"] is None
    assert "Refused" in broken["text"]
    assert "Not taken:" in broken["text"]
    reason = await db.fetchval("SELECT file_errors FROM uploads")
    (error,) = json.loads(reason) if isinstance(reason, str) else reason
    assert error["reason"][:40].lower() in broken["text"].lower()
    assert "1 refused" in await page.text("#final")


async def test_the_event_stream_parser_takes_any_chunking_and_line_ending(
    serve_api: ServeApi, page: Page
) -> None:
    """The page's own SSE parser (fetch() streams: EventSource cannot send the key), fed
    the pieces a network may cut a stream into."""
    api = await serve_api()
    await page.open(api.url)
    chunks = [
        "retry: 2500\n\n: keep-alive\r\n\r\nid: 1\nevent: sta",
        'te\ndata: {"a":\ndata: 1}\n\n',
        'id: 2\revent: image\rdata:{"path": "x.svg"}\r\r',
        "id: 3\r",
        "\nevent: done\r\ndata: {}\r\n",
        "\r\ndata: no event name\n\nevent: ignored without data\n\n",
    ]
    seen = await page.call(
        page.driver.execute_async_script,
        """const [chunks, done] = arguments;
           import('/static/js/sse.js').then(({SseParser}) => {
             const out = [];
             const parser = new SseParser(e => out.push([e.type, e.data, e.id]), {
               onComment: c => out.push(['comment', c, null]),
               onRetry: ms => out.push(['retry', String(ms), null]),
             });
             for (const chunk of chunks) parser.push(chunk);
             done(out);
           });""",
        chunks,
    )
    assert seen == [
        ["retry", "2500", None],
        ["comment", "keep-alive", None],
        ["state", '{"a":\n1}', "1"],
        ["image", '{"path": "x.svg"}', "2"],
        ["done", "{}", "3"],
        ["message", "no event name", "3"],
    ]
