"""The previewer's settings: the mosaic's size and the safety net's patience."""

from __future__ import annotations

from ingest_common.settings import IngestSettings
from pydantic import Field

from ingest_previewer.spec import DEFAULT_MOSAIC_WEBP_MODE, MosaicSpec, MosaicWebpMode


class PreviewerSettings(IngestSettings):
    service_name: str = "previewer"
    health_port: int = 8083
    concurrency: int = Field(4, ge=1)

    mosaic_images: int = Field(12, ge=1, le=400, description="random ready images per mosaic")
    # The mosaic's look defaults to MosaicSpec's own defaults: they live in one place.
    mosaic_tile: int = Field(MosaicSpec.tile, ge=16, le=512, description="cell size in pixels")
    mosaic_gap: int = Field(MosaicSpec.gap, ge=0, description="pixels between cells")
    mosaic_padding: int = Field(MosaicSpec.padding, ge=0, description="pixels around the grid")
    mosaic_webp_quality: int = Field(
        MosaicSpec.webp_quality, ge=1, le=100, description="WebP quality of the mosaic"
    )
    mosaic_webp_effort: int = Field(
        MosaicSpec.webp_effort,
        ge=0,
        le=6,
        description="WebP CPU effort of the mosaic: higher is smaller, slower",
    )
    mosaic_webp_mode: MosaicWebpMode = Field(
        DEFAULT_MOSAIC_WEBP_MODE,
        description="auto: lossless WebP when every tile's own WebP is lossless (flat icons),"
        " else lossy; lossy: always lossy",
    )
    cache_control: str = Field(
        "public, max-age=31536000, immutable", description="Cache-Control of mosaics"
    )

    stall_timeout: int = Field(
        900,
        ge=1,
        description="seconds without progress after which a set's unrendered images are failed,"
        " if no render message is left that could still render them",
    )
    safety_net_delay: int = Field(300, ge=0, le=900, description="seconds between re-checks")

    def mosaic_spec(self) -> MosaicSpec:
        """The mosaic these settings describe."""
        return MosaicSpec(
            tile=self.mosaic_tile,
            gap=self.mosaic_gap,
            padding=self.mosaic_padding,
            webp_quality=self.mosaic_webp_quality,
            webp_effort=self.mosaic_webp_effort,
            webp_mode=self.mosaic_webp_mode,
        )
