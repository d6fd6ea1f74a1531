"""What the render core produces, and the limits an SVG must respect: plain values, free of
libvips, so settings, the CLI and benchmarks can name them without loading the library."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

from ingest_common.errors import Refused
from ingest_common.webp import DEFAULT_LOSSLESS_LEVEL, check_lossless_level, lossless_options

MIB = 1024 * 1024

CONTENT_TYPES = {"png": "image/png", "webp": "image/webp"}

# A render process's memory (pool.py measures why these): replaced between renders above the
# soft limit, refused allocations above the hard one (RLIMIT_DATA); replaced after so many.
DEFAULT_MEMORY_SOFT_LIMIT = 384 * MIB
DEFAULT_MEMORY_HARD_LIMIT = 768 * MIB
DEFAULT_MAX_RENDERS = 1000

# auto: per image, lossless if its smallest rendition comes out no bigger than ``webp_auto_slack``
# times the lossy one. Flat-colour icons are smaller (and exact) lossless, gradients are 4-5x
# smaller lossy; the smallest rendition decides because it costs ~1% of the pixels.
WebpMode = Literal["auto", "lossy", "lossless"]
WEBP_MODES: tuple[WebpMode, ...] = get_args(WebpMode)
# RenderSpec.webp_mode is a plain str (checked in __post_init__); typed here for the settings.
DEFAULT_WEBP_MODE: WebpMode = "auto"


@dataclass(frozen=True)
class RenderSpec:
    """What to produce and the limits an input must respect. Picklable: sent to workers once.

    These defaults are also ProcessorSettings' defaults (settings.py reads them from here).
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    formats: tuple[str, ...] = ("png", "webp")
    # Encoder defaults are chosen by measurement (bench/README.md).
    webp_mode: str = DEFAULT_WEBP_MODE
    webp_quality: int = 80
    webp_effort: int = 4
    webp_lossless_level: int = DEFAULT_LOSSLESS_LEVEL
    webp_auto_slack: float = 1.15
    png_compression: int = 6
    png_palette: bool = False
    max_input_bytes: int = 5 * MIB
    # Caps on the SVG's own declared size: a native-size render of a huge declared canvas eats
    # gigabytes, and some libvips paths (and future callers) render at native size.
    max_declared_pixels: int = 50_000_000
    max_side: int = 20000
    # Output width is fixed, so height follows the aspect ratio: a 1x20000 SVG would make a
    # 512x10,240,000 rendition. The declared-pixel cap cannot catch that; this does.
    max_aspect_ratio: float = 20.0

    def __post_init__(self) -> None:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths!r}")
        unknown = set(self.formats) - CONTENT_TYPES.keys()
        if not self.formats or unknown:
            raise ValueError(f"formats must be a non-empty subset of png, webp: {self.formats!r}")
        if self.webp_mode not in WEBP_MODES:
            raise ValueError(
                f"webp_mode must be one of {', '.join(WEBP_MODES)}: {self.webp_mode!r}"
            )
        check_lossless_level(self.webp_lossless_level)

    def webp_options(self, lossless: bool) -> dict[str, object]:
        """``webpsave`` arguments for one WebP rendition, lossy or lossless."""
        if lossless:
            return lossless_options(self.webp_lossless_level)
        return {"Q": self.webp_quality, "effort": self.webp_effort, "keep": "none"}


# Which renditions to make: (width, format) pairs of the spec; None means every one.
Only = Collection[tuple[int, str]] | None


class RenderRejected(Refused):
    """The SVG cannot be rendered; ``reason`` is shown to the contributor. Not retryable.

    Crosses the process-pool boundary: Refused keeps the reason in ``.args``, so it pickles.
    """
