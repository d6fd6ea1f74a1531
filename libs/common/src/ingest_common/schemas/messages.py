"""One versioned message model per queue.

A message that does not parse as its queue's model is a poison pill: the consumer runtime
moves it to the dead-letter queue with the reason instead of half-processing it.
"""

from __future__ import annotations

import uuid
from typing import Literal

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


class PreviewFamily(Message):
    """q.preview: rebuild a family's mosaic.

    `product_ready` comes from the processor the moment a product's last image lands;
    `safety_net` is the batcher's delayed re-check for sets that stall.
    """

    kind: Literal["preview_family"] = "preview_family"
    reason: Literal["product_ready", "safety_net"]
    upload_id: uuid.UUID
    product_id: uuid.UUID
    family_id: uuid.UUID
    attempt: int = Field(1, ge=1)


class IndexProduct(Message):
    """q.index: (re)index one product from its database view."""

    kind: Literal["index_product"] = "index_product"
    upload_id: uuid.UUID
    product_id: uuid.UUID
