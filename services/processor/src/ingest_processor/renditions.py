"""Where one image's renditions go: the one way, shared by the processor and ``ingest backfill``.

The worker that renders an image stores its renditions (`StoreOrder`, worker.py); the
processor then records what was stored (stored.py). Imported by render workers: keep it light.

A rendition's key names its render profile (``renditions/<image>/<profile>/<width>.<format>``):
renditions are served with ``Cache-Control: immutable``, so a re-render with other encoder
settings must land under a new key, never overwrite bytes a CDN or browser may keep for a year.
Re-rendering with the same profile writes the same keys (same bytes: idempotent).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest_common.sigv4 import Credentials

from ingest_processor.render import RenderSpec, Rendition

if TYPE_CHECKING:
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


@dataclass(frozen=True, slots=True)
class StoreOrder:
    """Where a render's renditions go, sent with the render to the worker that stores them
    (worker.py): the bucket, the image and profile that name their keys, their caching, and the
    credentials to sign with (the processor's, fresh for each render: they rotate)."""

    bucket: str
    image: uuid.UUID
    profile: str
    cache_control: str
    credentials: Credentials


def store_order(
    settings: ProcessorSettings, image: uuid.UUID, profile: str, credentials: Credentials
) -> StoreOrder:
    return StoreOrder(settings.previews_bucket, image, profile, settings.cache_control, credentials)
