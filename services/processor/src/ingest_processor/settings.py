"""The processor's settings: what to render, how to encode it, and the render guard."""

from __future__ import annotations

from typing import Any

from ingest_common.cpus import available_cpus
from ingest_common.settings import IngestSettings
from pydantic import Field, model_validator

from ingest_processor.spec import (
    DEFAULT_MAX_RENDERS,
    DEFAULT_MEMORY_HARD_LIMIT,
    DEFAULT_MEMORY_SOFT_LIMIT,
    DEFAULT_WEBP_MODE,
    RenderSpec,
    WebpMode,
)

# Images in flight per render worker, and S3 requests at once per image in flight, unless
# set: enough that a worker never waits for the round trips around its renders (reading the
# image's row, storing eight renditions, finishing the row) at a region's 20 ms per request;
# with 8 images in all, two workers were idle half the time there (bench/e2e.py). What is
# needed grows as renders get faster: at 16 ms per render, 8 per worker left one worker
# holding a render 93-94 % of the time at 20 ms per request, 12 per worker 97-98 %.
IN_FLIGHT_PER_WORKER = 12
S3_REQUESTS_PER_IMAGE = 4


class ProcessorSettings(IngestSettings):
    service_name: str = "processor"
    health_port: int = 8082
    concurrency: int = Field(
        IN_FLIGHT_PER_WORKER,
        ge=1,
        description="images in flight per process (S3 + render)",
        json_schema_extra={"shown_default": f"{IN_FLIGHT_PER_WORKER} × render workers"},
    )
    s3_concurrency: int = Field(
        16,
        ge=1,
        description="S3 requests at once per process",
        json_schema_extra={"shown_default": f"{S3_REQUESTS_PER_IMAGE} × concurrency"},
    )

    # What the render core does defaults to RenderSpec's own defaults: they live in one place.
    render_widths: tuple[int, ...] = Field(RenderSpec.widths, description="JSON list, pixels")
    render_formats: tuple[str, ...] = Field(RenderSpec.formats, description="JSON list")
    render_workers: int = Field(
        default_factory=available_cpus,
        ge=1,
        description="render processes",
        json_schema_extra={"shown_default": "CPUs available (within the cgroup's CPU quota)"},
    )
    render_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds of CPU one SVG may take to render (in the slow lane)",
        json_schema_extra={
            "limit": [
                "CPU time of one SVG in the slow lane",
                "seconds",
                "that image fails; only its render process is replaced",
            ]
        },
    )
    render_slow_after: float = Field(
        2.0,
        ge=0,
        description="seconds of CPU a render may take on the render queue before it moves to"
        " the slow lane; 0: no slow lane",
        json_schema_extra={
            "limit": [
                "CPU time of one SVG on the render queue",
                "seconds",
                "nothing: it moves to the slow lane",
            ]
        },
    )
    render_slow_workers: int = Field(1, ge=1, description="render processes of the slow lane")
    render_slow_nice: int = Field(
        10, ge=0, le=19, description="nice level the slow lane's render processes add"
    )
    render_memory_soft_limit: int = Field(
        DEFAULT_MEMORY_SOFT_LIMIT,
        ge=1,
        description="bytes of memory after which a render process is replaced, between renders",
    )
    render_memory_hard_limit: int = Field(
        DEFAULT_MEMORY_HARD_LIMIT,
        ge=1,
        description="bytes of memory a render process may use (RLIMIT_DATA); an SVG that"
        " needs more fails",
        json_schema_extra={
            "limit": [
                "memory of one render",
                "bytes",
                "that image fails; its render process is replaced",
            ]
        },
    )
    render_max_renders: int = Field(
        DEFAULT_MAX_RENDERS, ge=1, description="renders after which a render process is replaced"
    )
    max_svg_bytes: int = Field(
        RenderSpec.max_input_bytes,
        ge=1,
        description="largest SVG rendered",
        json_schema_extra={"limit": ["one SVG, when rendered", "bytes", "that image fails"]},
    )
    max_declared_pixels: int = Field(
        RenderSpec.max_declared_pixels,
        ge=1,
        description="SVG width × height cap",
        json_schema_extra={
            "limit": ["SVG declared size", "pixels", "that image fails before rendering"]
        },
    )
    max_declared_side: int = Field(
        RenderSpec.max_side,
        ge=1,
        description="longest side an SVG may declare, pixels",
        json_schema_extra={
            "limit": ["SVG declared side", "px", "that image fails before rendering"]
        },
    )
    max_aspect_ratio: float = Field(
        RenderSpec.max_aspect_ratio,
        ge=1,
        description="most elongated SVG rendered (its height follows each width)",
        json_schema_extra={
            "limit": ["SVG elongation", "ratio", "that image fails before rendering"]
        },
    )
    # Encoder defaults: measured in bench/README.md (the corpus mix and the sample sets).
    webp_mode: WebpMode = Field(
        DEFAULT_WEBP_MODE,
        description="auto: per image, lossless WebP when its smallest rendition is at most "
        "INGEST_WEBP_AUTO_SLACK × the lossy size, else lossy",
    )
    webp_quality: int = Field(
        RenderSpec.webp_quality, ge=1, le=100, description="lossy WebP quality"
    )
    webp_effort: int = Field(
        RenderSpec.webp_effort,
        ge=0,
        le=6,
        description="lossy WebP CPU effort: higher is smaller, slower",
    )
    webp_lossless_level: int = Field(
        RenderSpec.webp_lossless_level,
        ge=0,
        le=9,
        description="lossless WebP preset (cwebp -z): higher is smaller, slower",
    )
    webp_auto_slack: float = Field(
        RenderSpec.webp_auto_slack,
        gt=0,
        description="auto mode: how much bigger than lossy lossless may be",
    )
    png_compression: int = Field(
        RenderSpec.png_compression, ge=0, le=9, description="zlib level of PNG renditions"
    )
    png_palette: bool = Field(
        RenderSpec.png_palette, description="8-bit palette PNG: smaller, slower"
    )
    cache_control: str = Field(
        "public, max-age=31536000, immutable", description="Cache-Control of renditions"
    )

    @model_validator(mode="before")
    @classmethod
    def _sized_from_the_workers(cls, values: Any) -> Any:
        """Unset, the images in flight follow the render workers, and S3's requests them."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if values.get("concurrency") is None:
            workers = values.get("render_workers") or available_cpus()
            values["concurrency"] = IN_FLIGHT_PER_WORKER * int(workers)
        if values.get("s3_concurrency") is None:
            values["s3_concurrency"] = S3_REQUESTS_PER_IMAGE * int(values["concurrency"])
        return values

    def render_spec(self) -> RenderSpec:
        """What the render core makes of an SVG, as these settings say."""
        return RenderSpec(
            widths=self.render_widths,
            formats=self.render_formats,
            webp_mode=self.webp_mode,
            webp_quality=self.webp_quality,
            webp_effort=self.webp_effort,
            webp_lossless_level=self.webp_lossless_level,
            webp_auto_slack=self.webp_auto_slack,
            png_compression=self.png_compression,
            png_palette=self.png_palette,
            max_input_bytes=self.max_svg_bytes,
            max_declared_pixels=self.max_declared_pixels,
            max_side=self.max_declared_side,
            max_aspect_ratio=self.max_aspect_ratio,
        )

    def conflicts(self) -> list[str]:
        problems = super().conflicts()
        if self.render_memory_soft_limit > self.render_memory_hard_limit:
            problems.append(
                f"{self.env('render_memory_soft_limit')} ({self.render_memory_soft_limit:,})"
                f" must not exceed {self.env('render_memory_hard_limit')}"
                f" ({self.render_memory_hard_limit:,})"
            )
        if self.render_slow_after >= self.render_timeout:
            problems.append(
                f"{self.env('render_slow_after')} ({self.render_slow_after:g} s) must be shorter"
                f" than {self.env('render_timeout')} ({self.render_timeout:g} s)"
            )
        if self.render_timeout >= self.handler_timeout:
            problems.append(
                f"{self.env('render_timeout')} ({self.render_timeout:g} s) must be shorter than"
                f" {self.env('handler_timeout')} ({self.handler_timeout:g} s), which also covers"
                " reading the original and storing the renditions"
            )
        return problems
