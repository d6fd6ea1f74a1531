"""The README's examples of the domain events, built from the event models themselves, so an
example cannot drift from what ingest sends (a test keeps the README in step).

Run: `uv run python tools/events_doc.py`
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from ingest_common import events

UPLOAD = uuid.UUID("0f5c2a5e-8a9e-5c41-9e5b-6d6a1f0b7d31")
PRODUCT = uuid.UUID("26265603-4c1e-5a7b-9b1e-3f0c8f2b9a10")
FAMILY = uuid.UUID("93ad974c-c35d-50a7-951b-ecea61dffe0f")
IMAGE = uuid.UUID("be892624-9ac8-569f-970f-149796e2cd8a")
FAILED_IMAGE = uuid.UUID("5a1c6a37-2c0f-5a4e-8d8e-0b6c2f8e1d42")
TRACEPARENT = "00-e705343a7d71d0f781cacfdec1e4befa-b7ad6b7169203331-01"
AT = datetime(2026, 12, 2, 9, 30, 0, tzinfo=UTC)
MOSAIC = events.Mosaic(
    png=f"previews/families/{FAMILY}/530859e615416b25f094.png",
    webp=f"previews/families/{FAMILY}/530859e615416b25f094.webp",
    width=568,
    height=568,
)


def _outcome(kind: type[events.ProductOutcome], ready: int, failed: int) -> events.EventData:
    listed = [
        events.ProductImage(
            id=IMAGE,
            path="ab-testing.svg",
            title="A/B testing",
            status="ready",
            renditions=f"renditions/{IMAGE}/7c305fbfdc/",
        )
    ]
    if failed:
        listed.append(
            events.ProductImage(
                id=FAILED_IMAGE,
                path="huge.svg",
                title="Huge",
                status="failed",
                failure_reason="declares 100000×100000 pixels, a side longer than the limit"
                " of 20,000",
            )
        )
    return kind(
        product_id=PRODUCT,
        upload_id=UPLOAD,
        contributor="acme",
        family="material-design-icons",
        title="Material Design Essentials",
        product_type="icon_set",
        license="apache-2.0",
        images=ready + failed,
        ready=ready,
        failed=failed,
        previews_bucket="ingest-previews",
        listed=listed[: ready + failed],
        mosaic=MOSAIC if ready else None,
    )


EXAMPLES: list[tuple[events.EventData, uuid.UUID]] = [
    (
        events.UploadReceived(
            upload_id=UPLOAD,
            contributor="acme",
            bucket="ingest-uploads",
            key="uploads/acme/essentials.zip",
            size=48213,
        ),
        UPLOAD,
    ),
    (
        events.UploadRejected(
            upload_id=UPLOAD,
            contributor="acme",
            key="uploads/acme/essentials.zip",
            reason='manifest.json is not valid: unknown field "licence" (did you mean "license"?)',
        ),
        UPLOAD,
    ),
    (_outcome(events.ProductReady, 1, 0), PRODUCT),
    (_outcome(events.ProductPartiallyReady, 1, 1), PRODUCT),
    (_outcome(events.ProductFailed, 0, 1), PRODUCT),
    (
        events.FamilyPreviewUpdated(
            family_id=FAMILY,
            family="material-design-icons",
            previews_bucket="ingest-previews",
            mosaic=MOSAIC,
            images=16,
        ),
        FAMILY,
    ),
    (
        events.ProductIndexed(
            product_id=PRODUCT,
            upload_id=UPLOAD,
            title="Material Design Essentials",
            family="material-design-icons",
            searchable=True,
        ),
        PRODUCT,
    ),
]


def examples() -> str:
    """One fenced JSON example per event type, under a line naming it."""
    assert {type(data) for data, _ in EXAMPLES} == set(events.EVENT_TYPES), "one example each"
    parts = []
    for n, (data, subject) in enumerate(EXAMPLES, start=1):
        body = events.envelope(
            data,
            subject=str(subject),
            traceparent=TRACEPARENT,
            event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"example:{data.type}"),
            at=AT,
        )
        body["sequence"] = 41 + n
        parts.append(f"`{data.type}`:\n\n```json\n{json.dumps(body, indent=2)}\n```")
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(examples())
