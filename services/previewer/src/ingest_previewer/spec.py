"""What a family mosaic looks like: a plain value, free of libvips, so that settings and
anything else can name it without loading the image library."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ingest_common.webp import DEFAULT_LOSSLESS_LEVEL, lossless_options

# auto: lossless when every tile's own WebP rendition is (the processor's auto mode found each
# image flat): a flat family's mosaic is then exact, about a fifth smaller and cheaper to encode
# than lossy (bench/mosaic.py); a tile with gradients keeps it lossy, as lossless would be
# 1.5-4x the bytes.
MosaicWebpMode = Literal["auto", "lossy"]
MOSAIC_WEBP_MODES: tuple[MosaicWebpMode, ...] = get_args(MosaicWebpMode)
# MosaicSpec.webp_mode is a plain str (checked in __post_init__); typed here for the settings.
DEFAULT_MOSAIC_WEBP_MODE: MosaicWebpMode = "auto"


@dataclass(frozen=True)
class MosaicSpec:
    # These defaults are also PreviewerSettings' defaults (settings.py reads them from here).
    tile: int = 128
    gap: int = 8
    padding: int = 16
    columns: int | None = None  # None: near-square grid
    background: tuple[int, int, int, int] = (255, 255, 255, 255)  # sRGB + alpha, 0..255
    webp_quality: int = 85
    # libwebp's method, as the processor's INGEST_WEBP_EFFORT. On the corpus' 12-tile mosaics
    # 2 takes half the CPU of 4 for 3-5 % more bytes (README, "The whole pipeline"); the bytes
    # are every storefront view's, the CPU one rebuild's, so 4 stays the default.
    webp_effort: int = 4
    webp_mode: str = DEFAULT_MOSAIC_WEBP_MODE

    def __post_init__(self) -> None:
        if self.tile < 1 or self.gap < 0 or self.padding < 0:
            raise ValueError(f"tile must be positive, gap and padding non-negative: {self!r}")
        if not 0 <= self.webp_effort <= 6:
            raise ValueError(f"webp_effort must be 0..6, got {self.webp_effort}")
        if self.columns is not None and self.columns < 1:
            raise ValueError(f"columns must be positive or None, got {self.columns}")
        if self.webp_mode not in MOSAIC_WEBP_MODES:
            raise ValueError(
                f"webp_mode must be one of {', '.join(MOSAIC_WEBP_MODES)}: {self.webp_mode!r}"
            )

    def webp_lossless(self, flat_tiles: bool) -> bool:
        """Whether a mosaic's WebP is lossless; ``flat_tiles``: every tile's own WebP is."""
        return flat_tiles and self.webp_mode == "auto"

    def webp_options(self, lossless: bool) -> dict[str, object]:
        """``webpsave`` arguments for a mosaic's WebP."""
        if lossless:
            # The processor's default lossless preset: the tiles' choice was made with it.
            return lossless_options(DEFAULT_LOSSLESS_LEVEL)
        return {"Q": self.webp_quality, "effort": self.webp_effort, "keep": "none"}
