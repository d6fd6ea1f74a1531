"""What a family mosaic looks like: a plain value, free of libvips, so that settings and
anything else can name it without loading the image library."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        if self.tile < 1 or self.gap < 0 or self.padding < 0:
            raise ValueError(f"tile must be positive, gap and padding non-negative: {self!r}")
        if not 0 <= self.webp_effort <= 6:
            raise ValueError(f"webp_effort must be 0..6, got {self.webp_effort}")
        if self.columns is not None and self.columns < 1:
            raise ValueError(f"columns must be positive or None, got {self.columns}")
