"""Lossless WebP as the processor's renditions and the previewer's mosaics encode it: plain
values, free of libvips, so specs and settings can name them without loading the library."""

from __future__ import annotations

# (method, quality) of libwebp's WebPConfigLosslessPreset, i.e. cwebp -z 0..9. libwebp's
# lossless "quality" is compression effort, not fidelity; the preset pairs it with a method.
LOSSLESS_PRESETS = (
    (0, 0),
    (1, 20),
    (2, 25),
    (3, 30),
    (3, 50),
    (4, 50),
    (4, 75),
    (4, 90),
    (5, 90),
    (6, 100),
)
# cwebp -z 2: on icons as small as method 2 quality 80, at lower cost (bench/README.md).
DEFAULT_LOSSLESS_LEVEL = 2


def check_lossless_level(level: int) -> None:
    if not 0 <= level < len(LOSSLESS_PRESETS):
        raise ValueError(f"webp_lossless_level must be 0-9, got {level}")


def lossless_options(level: int = DEFAULT_LOSSLESS_LEVEL) -> dict[str, object]:
    """``webpsave`` arguments for lossless WebP at preset ``level`` (no metadata)."""
    method, effort = LOSSLESS_PRESETS[level]
    return {"lossless": True, "effort": method, "Q": effort, "keep": "none"}
