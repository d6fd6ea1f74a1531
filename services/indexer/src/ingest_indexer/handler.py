"""What one index message does: the product's current document → search (its set and its
icons, ingest_common.search.index_product).

The document is read fresh from the database view every time, so duplicates and
out-of-order messages converge on the same, latest state; search is written, and
product.indexed told, only when the document changed.
"""

from __future__ import annotations

import structlog
from ingest_common.errors import PermanentError
from ingest_common.events import ProductIndexed, emit
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import ServiceHandler
from ingest_common.schemas.messages import IndexProduct
from ingest_common.search import index_product

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
            indexed = await index_product(connection, message.product_id)
            if indexed is None:
                raise PermanentError(f"product {message.product_id} does not exist")
            await connection.execute(
                "UPDATE products SET indexed_at = now() WHERE id = $1", message.product_id
            )
            if not indexed.changed:
                log.info("indexer.unchanged")
                return  # a repeat: nothing changed in search, nothing to tell
            document = indexed.document
            if indexed.searchable:
                log.info("indexer.indexed", title=document["title"])
            else:
                log.info("indexer.removed")  # nothing to show: not searchable
            await emit(
                connection,
                ProductIndexed(
                    product_id=message.product_id,
                    upload_id=message.upload_id,
                    title=document["title"],
                    family=document["family"],
                    searchable=indexed.searchable,
                ),
                subject=message.product_id,
            )
