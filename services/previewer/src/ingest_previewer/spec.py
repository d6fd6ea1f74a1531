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

    def __post_init__(self) -> None:
        if self.tile < 1 or self.gap < 0 or self.padding < 0:
            raise ValueError(f"tile must be positive, gap and padding non-negative: {self!r}")
        if self.columns is not None and self.columns < 1:
            raise ValueError(f"columns must be positive or None, got {self.columns}")
