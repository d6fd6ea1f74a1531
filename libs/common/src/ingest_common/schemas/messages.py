"""One versioned message model per queue.

A message that does not parse as its queue's model is a poison pill: the consumer runtime
moves it to the dead-letter queue with the reason instead of half-processing it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1


class RenderImage(Message):
    """q.render: render one image's previews (sent by the batcher, one per image)."""

    kind: Literal["render_image"] = "render_image"
    upload_id: uuid.UUID
    product_id: uuid.UUID
    image_id: uuid.UUID
    original_key: str = Field(min_length=1)
    # The SVG itself, when the batcher still held it and it was small (INGEST_INLINE_SVG_BYTES):
    # the processor then reads nothing from S3 before rendering. Absent: read `original_key`.
    # (Optional, so a processor reads both shapes: deploy processors before the batcher.)
    svg: str | None = None


class PreviewFamily(Message):
    """q.preview: a product of the family completed (or changed): rebuild the family's mosaic
    if it is stale, then have the product indexed. Sent by whoever saw the product complete."""

    kind: Literal["preview_family"] = "preview_family"
    upload_id: uuid.UUID
    product_id: uuid.UUID
    family_id: uuid.UUID


class CheckProgress(Message):
    """q.preview, delayed: the batcher's safety net for a set whose render messages may be
    lost; the previewer looks again later, or fails the stragglers (see its handler)."""

    kind: Literal["check_progress"] = "check_progress"
    upload_id: uuid.UUID
    product_id: uuid.UUID
    family_id: uuid.UUID
    attempt: int = Field(1, ge=1)


# What the preview queue carries, told apart by `kind`.
PreviewMessage = Annotated[PreviewFamily | CheckProgress, Field(discriminator="kind")]


class IndexProduct(Message):
    """q.index: (re)index one product from its database view."""

    kind: Literal["index_product"] = "index_product"
    upload_id: uuid.UUID
    product_id: uuid.UUID
