"""What one index message does: the product's current document → the search backend.

The document is read fresh from the database view every time, so duplicates and
out-of-order messages converge on the same, latest state.
"""

from __future__ import annotations

import structlog
from ingest_common.errors import PermanentError
from ingest_common.events import ProductIndexed, emit
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import ServiceHandler
from ingest_common.schemas.messages import IndexProduct
from ingest_common.search import PostgresSearch, product_document

from ingest_indexer.settings import IndexerSettings

log = structlog.get_logger("ingest.indexer")


class IndexHandler(ServiceHandler[IndexProduct, IndexerSettings]):
    message_model = IndexProduct
    settings_class = IndexerSettings
    uses_s3 = False  # the search backend is PostgreSQL

    async def handle(self, message: IndexProduct, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            upload_id=str(message.upload_id), product_id=str(message.product_id)
        )
        async with self.db.acquire() as connection, connection.transaction():
            document = await product_document(connection, message.product_id)
            if document is None:
                raise PermanentError(f"product {message.product_id} does not exist")
            # Locked: two index messages of one product settle one after the other.
            before = await connection.fetchval(
                "SELECT document FROM search_documents WHERE product_id = $1 FOR UPDATE",
                message.product_id,
            )
            backend = PostgresSearch(connection)
            if document["images_ready"] == 0:
                await backend.delete(message.product_id)  # nothing to show: not searchable
                log.info("indexer.removed")
            else:
                await backend.upsert(document)
                log.info("indexer.indexed", title=document["title"])
            await connection.execute(
                "UPDATE products SET indexed_at = now() WHERE id = $1", message.product_id
            )
            searchable = document["images_ready"] > 0
            if before == (document if searchable else None):
                return  # a repeat: nothing changed in search, nothing to tell
            await emit(
                connection,
                ProductIndexed(
                    product_id=message.product_id,
                    upload_id=message.upload_id,
                    title=document["title"],
                    family=document["family"],
                    searchable=searchable,
                ),
                subject=message.product_id,
            )
