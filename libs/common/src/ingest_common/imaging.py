"""Image helpers the processor and the previewer share (both render with libvips).

Needs the `imaging` extra of ingest-common (pyvips); the services that import this module
depend on `ingest-common[imaging]`.
"""

from __future__ import annotations

import pyvips


def as_srgb_with_alpha(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB with alpha, whatever the image held (grey, palette, 16-bit, no alpha).

    Encoders keep what they are given, and a grey or alpha-less rendition or tile would
    surprise every consumer; svgload yields 8-bit sRGB + alpha today, PNG tiles vary.
    """
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.addalpha()
    if image.format != "uchar":
        image = image.cast("uchar")
    return image
