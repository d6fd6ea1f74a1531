"""Store one image's renditions: the one way, shared by the processor and ``ingest backfill``.

A rendition's key names its render profile (``renditions/<image>/<profile>/<width>.<format>``):
renditions are served with ``Cache-Control: immutable``, so a re-render with other encoder
settings must land under a new key, never overwrite bytes a CDN or browser may keep for a year.
Re-rendering with the same profile writes the same keys (same bytes: idempotent).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from ingest_common.aws import Aws

from ingest_processor.render import RenderSpec, Rendition
from ingest_processor.settings import ProcessorSettings

# RenderSpec fields that do not change a rendition's bytes: which sizes and formats exist is
# recorded per rendition, and the input limits only decide whether an SVG renders at all.
# Any other field (today's encoder settings, and any the render core grows) is in the profile,
# so a new encoder knob re-renders rather than leaving stale renditions behind.
_NOT_IN_PROFILE = frozenset(
    {"widths", "formats", "max_input_bytes", "max_declared_pixels", "max_side", "max_aspect_ratio"}
)


def render_profile(spec: RenderSpec) -> str:
    """A short, stable name of how renditions are encoded (10 hex digits)."""
    encoding = {
        k: v for k, v in sorted(dataclasses.asdict(spec).items()) if k not in _NOT_IN_PROFILE
    }
    digest = hashlib.sha256(json.dumps(encoding, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:10]


def rendition_key(image: uuid.UUID, rendition: Rendition, profile: str) -> str:
    return f"renditions/{image}/{profile}/{rendition.width}.{rendition.format}"


def target(spec: RenderSpec, profile: str) -> list[dict[str, Any]]:
    """What an up-to-date image's ``renditions`` contain, one JSON containment pattern each."""
    return [
        {"width": width, "format": fmt, "profile": profile}
        for width in spec.widths
        for fmt in spec.formats
    ]


async def store_renditions(
    aws: Aws,
    settings: ProcessorSettings,
    image: uuid.UUID,
    renditions: Sequence[Rendition],
    profile: str,
) -> list[dict[str, Any]]:
    """Put every rendition (concurrently; the S3 client caps requests) and return the entries
    for ``images.renditions``."""
    return list(
        await asyncio.gather(*(_store(aws, settings, image, r, profile) for r in renditions))
    )


async def _store(
    aws: Aws, settings: ProcessorSettings, image: uuid.UUID, rendition: Rendition, profile: str
) -> dict[str, Any]:
    key = rendition_key(image, rendition, profile)
    await aws.put_bytes(
        settings.previews_bucket,
        key,
        rendition.data,
        content_type=rendition.content_type,
        cache_control=settings.cache_control,
        # On the PutObject span itself: a span of its own per rendition cost as much again.
        span_attributes={
            "ingest.rendition.width": rendition.width,
            "ingest.rendition.format": rendition.format,
            "ingest.rendition.bytes": len(rendition.data),
        },
    )
    return {
        "width": rendition.width,
        "height": rendition.height,
        "format": rendition.format,
        "key": key,
        "bytes": len(rendition.data),
        "profile": profile,
    }
