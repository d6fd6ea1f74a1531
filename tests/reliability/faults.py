"""Fault injection for the reliability tests: the expected end state, and a cuttable link."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

import asyncpg
from botocore.exceptions import ClientError
from ingest_cli.status import UploadStatus, load_status
from ingest_cli.upload import Uploaded
from ingest_common.aws import Aws
from ingest_common.db.pool import connect
from ingest_common.topology import load_topology

from tests.integration.pipeline import queue_counts


async def wait_finished(
    dsn: str, uploads: list[Uploaded], timeout: float = 180
) -> list[UploadStatus]:
    """Poll (on a connection of its own) until every upload is searchable, or give up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await connect(dsn)
            try:
                statuses = [await load_status(connection, u.upload_id) for u in uploads]
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError):
            statuses = []  # the database is being interfered with: look again
        if statuses and all(s is not None and s.finished for s in statuses):
            return [s for s in statuses if s is not None]
        if time.monotonic() > deadline:
            return [s for s in statuses if s is not None]
        await asyncio.sleep(0.5)


async def count_ready(dsn: str) -> int:
    connection = await connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM images WHERE status = 'ready'"))
    finally:
        await connection.close()


@dataclass
class EndState:
    expected_images: int
    images: int
    ready: int
    missing_objects: int
    products: int
    indexed: int
    mosaics: int
    dead_letters: int

    @property
    def lost(self) -> int:
        """Images that should be ready with every rendition stored, and are not."""
        return self.expected_images - self.ready + self.missing_objects


async def end_state(aws: Aws, dsn: str, uploads: int, expected_images: int) -> EndState:
    """The full expected state: every image ready once, every object there, all indexed."""
    connection = await connect(dsn)
    try:
        images = await connection.fetch("SELECT status::text, renditions FROM images")
        products = await connection.fetchval("SELECT count(*) FROM products")
        indexed = await connection.fetchval("SELECT count(*) FROM search_documents")
        mosaics = await connection.fetchval("SELECT count(*) FROM family_previews")
    finally:
        await connection.close()
    keys = [r["key"] for image in images for r in image["renditions"]]
    missing = 0
    for key in keys:
        try:
            await aws.s3.head_object(Bucket=aws.settings.previews_bucket, Key=key)
        except ClientError:
            missing += 1
    dead = 0
    for queue in load_topology(aws.settings).queues:
        dead += (await queue_counts(aws, queue.dead_letter_name))[0]
    return EndState(
        expected_images=expected_images,
        images=len(images),
        ready=sum(1 for image in images if image["status"] == "ready"),
        missing_objects=missing,
        products=products,
        indexed=indexed,
        mosaics=mosaics,
        dead_letters=dead,
    )


def assert_complete(state: EndState, uploads: int) -> None:
    assert state.images == state.expected_images, "no image row lost or duplicated"
    assert state.ready == state.expected_images, "every image ready exactly once"
    assert state.missing_objects == 0, "every rendition object present"
    assert state.products == uploads
    assert state.indexed == uploads, "the index is consistent"
    assert state.mosaics >= 1, "the family mosaic exists"
    assert state.dead_letters == 0


class Link:
    """A TCP proxy to the AWS endpoint that a test can cut and restore."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.id = uuid.uuid4().hex[:6]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a network outage does."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()
