"""An upload's progress as contributors see it, and how it is pushed to them live.

`view` turns the shared `UploadStatus` (ingest_common.upload_status, also `ingest status`)
into the JSON of GET /v1/uploads/{id}; `changes` says what happened between two views, as
the events of GET /v1/uploads/{id}/events (one per image as it finishes, then the
product, the mosaic, the search index, and `done`).

`ProgressHub`: one LISTEN connection per API process, on the channel `ingest_progress`,
which carries the id of an upload or a product whenever it moves (an image's outcome:
ingest_common.db.completion; an upload's status, a product's completion, mosaic and
indexing: the triggers of migration 0008). A notification makes the hub re-read the state
of each upload being watched that it concerns — once, whatever the number of clients
watching it — and every client of that upload sends what changed. Nothing polls; after the
LISTEN connection is re-established every watched upload is re-read once, since
notifications sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from ingest_common.db.pool import Connection, connect
from ingest_common.upload_status import (
    PROGRESS_CHANNEL,
    UploadStatus,
    latest_upload_at,
    load_status,
)

from ingest_api.settings import ApiSettings

log = structlog.get_logger("ingest.api.progress")

View = dict[str, Any]
Url = Callable[[str], str]  # an object key of the previews bucket → its public URL
KEEPALIVE = 10.0  # seconds between checks that the LISTEN connection still answers
RECONNECT = 2.0  # seconds before listening again after the connection failed
PREVIEW_WIDTH = 128  # the rendition a file's status links to


# --- what a client asks about ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An upload of `contributor`, named by `ref`: the upload's own id, or the id of the
    upload form the API issued (the object's name), which names the newest upload at its key."""

    contributor: str
    ref: uuid.UUID
    upload_id: uuid.UUID | None = None  # ref is the upload's own id
    form: dict[str, Any] | None = None  # ref is an upload form's id

    @property
    def key(self) -> tuple[str, uuid.UUID]:
        return (self.contributor, self.ref)


async def resolve(connection: Connection, contributor: str, ref: uuid.UUID) -> Target | None:
    """What `ref` names among `contributor`'s uploads; None if nothing of theirs."""
    if await connection.fetchval(
        "SELECT true FROM uploads WHERE id = $1 AND contributor_id = $2", ref, contributor
    ):
        return Target(contributor, ref, upload_id=ref)
    form = await connection.fetchrow(
        "SELECT * FROM upload_forms WHERE id = $1 AND contributor_id = $2", ref, contributor
    )
    return Target(contributor, ref, form=dict(form)) if form else None


ObjectExists = Callable[[str, str], Awaitable[bool]]


async def read_view(
    connection: Connection, target: Target, url: Url, object_exists: ObjectExists
) -> View:
    """The target's current view (one read of the database; S3 only for a form whose
    upload has not been recorded yet)."""
    upload = target.upload_id
    form = target.form
    if upload is None and form is not None:
        upload = await latest_upload_at(connection, form["bucket"], form["object_key"])
    status = await load_status(connection, upload) if upload else None
    if status is not None:
        return view(status, target.ref, url)
    assert form is not None, "a target without an upload row is an upload form"
    stored = await object_exists(form["bucket"], form["object_key"])
    return awaiting_view(target.ref, form, stored=stored, now=datetime.now(UTC))


# --- views -----------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _preview(renditions: list[dict[str, Any]], url: Url) -> str | None:
    pngs = [r for r in renditions if r.get("format") == "png" and r.get("key")]
    if not pngs:
        return None
    best = min(pngs, key=lambda r: (abs(int(r.get("width", 0)) - PREVIEW_WIDTH), r["width"]))
    return url(str(best["key"]))


def view(status: UploadStatus, ref: uuid.UUID, url: Url) -> View:
    """GET /v1/uploads/{id}: the upload, its product and every file, with every reason."""
    upload, product = status.upload, status.product
    files: list[dict[str, Any]] = [
        {
            "path": image["path"],
            "title": image["title"],
            "status": image["status"],
            "reason": image["failure_reason"],
            "warnings": list(image["warnings"] or []),
            "preview": _preview(image["renditions"] or [], url)
            if image["status"] == "ready"
            else None,
        }
        for image in status.images
    ]
    files.extend(
        {
            "path": problem["path"],
            "title": None,
            "status": "refused",
            "reason": problem["reason"],
            "warnings": [],
            "preview": None,
        }
        for problem in upload["file_errors"] or []
    )
    return {
        "id": str(ref),
        "upload_id": str(upload["id"]),
        "key": upload["object_key"],
        "status": upload["status"],
        "reason": upload["error"],
        "duplicate_of": str(upload["duplicate_of"]) if upload["duplicate_of"] else None,
        "replaced_by": str(upload["replaced_by"]) if upload["replaced_by"] else None,
        "trace_id": upload["trace_id"],
        "received_at": _iso(upload["received_at"]),
        "product": None
        if product is None
        else {
            "id": str(product["id"]),
            "title": product["title"],
            "family": product["family"],
            "product_type": product["product_type"],
            "status": product["status"],
            "images": product["image_count"],
            "ready": product["images_ready"],
            "failed": product["images_failed"],
            "complete": status.complete,
            "url": f"/v1/products/{product['id']}",
        },
        "files": files,
        "mosaic": status.previewed,
        "indexed": status.indexed,
        "finished": status.finished,
    }


def awaiting_view(ref: uuid.UUID, form: dict[str, Any], *, stored: bool, now: datetime) -> View:
    """An upload form whose upload is not recorded yet: waiting for the file, the file
    waiting for the pipeline, or a form that expired unused (final)."""
    expired = not stored and form["expires_at"] <= now
    state = "uploaded" if stored else "expired" if expired else "awaiting_upload"
    reasons = {
        "awaiting_upload": "waiting for the ZIP to be sent with the upload form",
        "uploaded": "the ZIP is stored; the pipeline has not picked it up yet",
        "expired": "the upload form expired before a ZIP was sent: ask for a new one",
    }
    return {
        "id": str(ref),
        "upload_id": None,
        "key": form["object_key"],
        "status": state,
        "reason": reasons[state],
        "duplicate_of": None,
        "replaced_by": None,
        "trace_id": form["trace_id"],
        "received_at": None,
        "expires_at": _iso(form["expires_at"]),
        "product": None,
        "files": [],
        "mosaic": False,
        "indexed": False,
        "finished": expired,
    }


Event = tuple[str, dict[str, Any]]  # (SSE event name, JSON data)


def changes(before: View | None, after: View) -> list[Event]:
    """The events that take a client from `before` (None: it knows nothing) to `after`.

    A client that knows nothing gets `state` (the whole view). Then: `upload` when the
    upload's status or reason changes, `image` for each file whose outcome is new or
    changed (ready, failed or refused; a file going back to pending says nothing), `product`
    when every image has its outcome, `mosaic` when the family's mosaic has been brought up
    to date, `indexed` when search holds the product, and `done` when nothing more will
    happen (after which the stream ends).
    """
    events: list[Event] = []
    if before is None:
        events.append(("state", after))
    else:
        if (before["status"], before["reason"], before["upload_id"]) != (
            after["status"],
            after["reason"],
            after["upload_id"],
        ):
            events.append(
                (
                    "upload",
                    {
                        key: after[key]
                        for key in ("id", "upload_id", "status", "reason", "duplicate_of")
                    }
                    | {"replaced_by": after["replaced_by"]},
                )
            )
        known = {f["path"]: f for f in before["files"]}
        for file in after["files"]:
            if file["status"] == "pending":
                continue
            previous = known.get(file["path"])
            if previous is None or (previous["status"], previous["reason"]) != (
                file["status"],
                file["reason"],
            ):
                events.append(("image", file))
        before_complete = bool(before["product"] and before["product"]["complete"])
        if after["product"] and after["product"]["complete"] and not before_complete:
            events.append(("product", after["product"]))
        if after["mosaic"] and not before["mosaic"]:
            events.append(("mosaic", _product_ref(after)))
        if after["indexed"] and not before["indexed"]:
            events.append(("indexed", _product_ref(after)))
    if after["finished"] and not (before and before["finished"]):
        events.append(("done", summary(after)))
    return events


def _product_ref(view: View) -> dict[str, Any]:
    product = view["product"] or {}
    return {"product_id": product.get("id"), "family": product.get("family")}


def summary(view: View) -> dict[str, Any]:
    counts = {state: 0 for state in ("ready", "failed", "refused", "pending")}
    for file in view["files"]:
        counts[file["status"]] = counts.get(file["status"], 0) + 1
    return {
        "id": view["id"],
        "upload_id": view["upload_id"],
        "status": view["status"],
        "reason": view["reason"],
        "product_id": view["product"]["id"] if view["product"] else None,
        "files": counts,
        "mosaic": view["mosaic"],
        "indexed": view["indexed"],
    }


# --- the hub ------------------------------------------------------------------------------


Reader = Callable[[Target], Awaitable[View]]


@dataclass(eq=False)
class Subscriber:
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Watch:
    """One watched upload: its latest view, shared by every client watching it."""

    target: Target
    read: Reader
    view: View | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    reads: int = 0  # how often it was read (tests: once per change, not once per client)
    _task: asyncio.Task[None] | None = None
    _dirty: bool = False

    def ids(self) -> set[str]:
        names = {str(self.target.ref)}
        if self.view is not None:
            names.update(
                str(value)
                for value in (self.view.get("upload_id"), (self.view["product"] or {}).get("id"))
                if value
            )
        return names

    @property
    def awaiting(self) -> bool:
        """No upload recorded yet: any upload's news may be this one's."""
        return self.view is None or self.view["upload_id"] is None

    def poke(self) -> None:
        """Read again (once, however many notifications arrive while a read runs)."""
        if self._task is not None and not self._task.done():
            self._dirty = True
            return
        self._task = asyncio.create_task(self._refresh(), name=f"progress {self.target.ref}")

    async def _refresh(self) -> None:
        while True:
            self._dirty = False
            try:
                self.reads += 1
                self.view = await self.read(self.target)
            except Exception as exc:  # the next notification, or reconnection, reads again
                log.warning("progress.read_failed", upload=str(self.target.ref), error=str(exc))
                return
            for subscriber in self.subscribers:
                subscriber.changed.set()
            if not self._dirty:
                return

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class ProgressHub:
    def __init__(self, settings: ApiSettings, read: Reader) -> None:
        self.settings = settings
        self.read = read
        self.watches: dict[tuple[str, uuid.UUID], Watch] = {}
        self.listening = asyncio.Event()
        self.closing = asyncio.Event()  # the process stops: streams end, clients reconnect
        self.notifications = 0

    @contextlib.asynccontextmanager
    async def subscribe(self, target: Target) -> AsyncIterator[tuple[Watch, Subscriber]]:
        """Watch `target` for as long as the block runs; the first view is read at once
        (shared with the clients already watching it)."""
        watch = self.watches.get(target.key)
        if watch is None:
            watch = self.watches[target.key] = Watch(target, self.read)
            watch.poke()
        subscriber = Subscriber()
        watch.subscribers.add(subscriber)
        if watch.view is not None:
            subscriber.changed.set()
        try:
            yield watch, subscriber
        finally:
            watch.subscribers.discard(subscriber)
            if not watch.subscribers:
                self.watches.pop(target.key, None)
                watch.close()

    def notified(self, payload: str) -> None:
        self.notifications += 1
        for watch in list(self.watches.values()):
            if watch.awaiting or payload in watch.ids():
                watch.poke()

    async def run(self) -> None:
        """Listen forever (cancel to stop), re-establishing the connection when it fails."""
        while True:
            try:
                await self._listen()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("progress.listen_failed", error=str(exc) or repr(exc))
            await asyncio.sleep(RECONNECT)

    async def _listen(self) -> None:
        connection = await connect(
            self.settings.database_url, connect_timeout=self.settings.db_connect_timeout
        )
        try:
            await connection.add_listener(
                PROGRESS_CHANNEL, lambda _c, _pid, _channel, payload: self.notified(payload)
            )
            self.listening.set()
            log.info("progress.listening", channel=PROGRESS_CHANNEL, watched=len(self.watches))
            for watch in list(self.watches.values()):  # news missed while not listening
                watch.poke()
            while True:
                await asyncio.sleep(KEEPALIVE)
                async with asyncio.timeout(self.settings.probe_timeout):
                    await connection.fetchval("SELECT 1")
        finally:
            self.listening.clear()
            connection.terminate()
