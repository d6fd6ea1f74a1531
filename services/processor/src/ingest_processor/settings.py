"""The processor's settings: what to render, how to encode it, and the render guard."""

from __future__ import annotations

import os
from typing import Literal

from ingest_common.settings import IngestSettings
from pydantic import Field


class ProcessorSettings(IngestSettings):
    service_name: str = "processor"
    health_port: int = 8082
    concurrency: int = Field(8, ge=1, description="images in flight per process (S3 + render)")

    render_widths: tuple[int, ...] = Field((64, 128, 256, 512), description="JSON list, pixels")
    render_formats: tuple[str, ...] = Field(("png", "webp"), description="JSON list")
    render_workers: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)), ge=1, description="render processes"
    )
    render_timeout: float = Field(30.0, gt=0, description="seconds one SVG may take to render")
    max_svg_bytes: int = Field(5 * 2**20, ge=1, description="largest SVG rendered")
    max_declared_pixels: int = Field(50_000_000, ge=1, description="SVG width × height cap")
    # Encoder defaults: measured in bench/README.md (the corpus mix and the sample sets).
    webp_mode: Literal["auto", "lossy", "lossless"] = Field(
        "auto",
        description="auto: per image, lossless WebP when its smallest rendition is at most "
        "INGEST_WEBP_AUTO_SLACK × the lossy size, else lossy",
    )
    webp_quality: int = Field(80, ge=1, le=100, description="lossy WebP quality")
    webp_effort: int = Field(
        4, ge=0, le=6, description="lossy WebP CPU effort: higher is smaller, slower"
    )
    webp_lossless_level: int = Field(
        2, ge=0, le=9, description="lossless WebP preset (cwebp -z): higher is smaller, slower"
    )
    webp_auto_slack: float = Field(
        1.15, gt=0, description="auto mode: how much bigger than lossy lossless may be"
    )
    png_compression: int = Field(6, ge=0, le=9, description="zlib level of PNG renditions")
    png_palette: bool = Field(False, description="8-bit palette PNG: smaller, slower")
    cache_control: str = Field(
        "public, max-age=31536000, immutable", description="Cache-Control of renditions"
    )
