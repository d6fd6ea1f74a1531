"""The domain events ingest tells the rest of the marketplace, in a CloudEvents-style envelope.

Each event is written by `emit` in the same transaction as the state change it reports (the
transactional outbox, table `outbox`), and published afterwards by the batcher to the SNS
topic and the EventBridge bus (`ingest_common.outbox`). So an event is never lost with a
crash, and never told of a change that rolled back. Delivery is at least once: consumers
deduplicate on `id`, which stays the same however often the event is published; `sequence`
(the outbox position) orders a subject's events, which are published in that order.

| type | subject | when |
|---|---|---|
| `upload.received` | upload id | an upload object was recorded |
| `upload.rejected` | upload id | a set was refused as a whole, with the reason |
| `product.ready` | product id | every image of the product rendered |
| `product.partially_ready` | product id | complete, some images failed (each with its reason) |
| `product.failed` | product id | complete, no image rendered |
| `family.preview_updated` | family id | a family's mosaic changed (or went, with nothing ready) |
| `product.indexed` | product id | the product's search document changed |

A product that changes after it completed (an image brought back, a new version) reports
its outcome again. Data models are versioned (`dataschemaversion`); a new version of a type
adds a model, it never changes one in place.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ingest_common.db.pool import Connection
from ingest_common.telemetry.tracing import current_carrier

SOURCE = "ingest"
SPEC_VERSION = "1.0"
NOTIFY_CHANNEL = "ingest_outbox"  # LISTEN/NOTIFY: the outbox's trigger (0006) wakes the publisher
# An event stays well under SNS's and EventBridge's 256 KB: a product lists this many images.
MAX_LISTED_IMAGES = 1000


class EventData(BaseModel):
    """The `data` of an event; each subclass is one event type at one schema version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class UploadReceived(EventData):
    type = "upload.received"

    upload_id: uuid.UUID
    contributor: str | None
    bucket: str
    key: str
    size: int


class FileProblem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    reason: str


class UploadRejected(EventData):
    type = "upload.rejected"

    upload_id: uuid.UUID
    contributor: str | None
    key: str
    reason: str
    file_problems: list[FileProblem] = []


class ProductImage(BaseModel):
    """One image of a product: where its renditions are, or why it failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID
    path: str
    title: str
    status: str  # ready | failed
    # Every rendition of a ready image is under this prefix of the previews bucket:
    # <prefix><width>.<png|webp>
    renditions: str | None = None
    failure_reason: str | None = None


class Mosaic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    png: str
    webp: str
    width: int
    height: int


class ProductOutcome(EventData):
    """What a complete product is: counts, where the renditions are, the family's mosaic."""

    product_id: uuid.UUID
    upload_id: uuid.UUID  # the version shown
    contributor: str
    family: str
    title: str
    product_type: str
    license: str
    images: int
    ready: int
    failed: int
    previews_bucket: str
    listed: list[ProductImage]  # the first MAX_LISTED_IMAGES images, in manifest order
    mosaic: Mosaic | None  # the family's, when this was written (family.preview_updated follows)


class ProductReady(ProductOutcome):
    type = "product.ready"


class ProductPartiallyReady(ProductOutcome):
    type = "product.partially_ready"


class ProductFailed(ProductOutcome):
    type = "product.failed"


class FamilyPreviewUpdated(EventData):
    type = "family.preview_updated"

    family_id: uuid.UUID
    family: str
    previews_bucket: str
    mosaic: Mosaic | None  # None: nothing of the family is ready any more
    images: int  # how many images the mosaic shows


class ProductIndexed(EventData):
    type = "product.indexed"

    product_id: uuid.UUID
    upload_id: uuid.UUID
    title: str
    family: str
    searchable: bool  # False: removed from search (nothing of it is ready)


EVENT_TYPES: tuple[type[EventData], ...] = (
    UploadReceived,
    UploadRejected,
    ProductReady,
    ProductPartiallyReady,
    ProductFailed,
    FamilyPreviewUpdated,
    ProductIndexed,
)


def envelope(
    data: EventData, *, subject: str, traceparent: str | None, event_id: uuid.UUID, at: datetime
) -> dict[str, Any]:
    """The event as consumers read it (but `sequence`, which the publisher adds)."""
    return {
        "specversion": SPEC_VERSION,
        "id": str(event_id),
        "source": SOURCE,
        "type": data.type,
        "time": at.isoformat().replace("+00:00", "Z"),
        "subject": subject,
        "dataschemaversion": data.schema_version,
        "datacontenttype": "application/json",
        "traceparent": traceparent,
        "data": data.model_dump(mode="json"),
    }


async def emit(connection: Connection, data: EventData, *, subject: uuid.UUID | str) -> uuid.UUID:
    """Record an event in the caller's transaction; it is published once that commits.

    The event carries the trace context of the code that emits it (the upload's trace).
    """
    event_id = uuid.uuid4()
    body = envelope(
        data,
        subject=str(subject),
        traceparent=current_carrier().get("traceparent"),
        event_id=event_id,
        at=datetime.now(UTC),
    )
    await connection.execute(
        "INSERT INTO outbox (event_id, type, subject, envelope) VALUES ($1, $2, $3, $4)",
        event_id,
        data.type,
        str(subject),
        body,
    )
    return event_id  # the insert's trigger wakes the publisher at commit (NOTIFY_CHANNEL)
