"""Render one untrusted SVG into PNG and WebP renditions with libvips.

Runs inside worker processes (see ``pool.py``); every function here is synchronous and
CPU-bound. The SVG is hostile until proven otherwise, so the order is: byte-size cap, format
sniff, header-only parse to read the declared size, caps on that size, and only then the
rasterising at each target width.

The SVG loader is always called explicitly (``svgload_buffer``), never through libvips' format
sniffing, so a PNG renamed ``.svg`` fails here even in a process where ``configure_vips`` has not
run. ``configure_vips`` additionally blocks every other loader in worker processes (defence in
depth, see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

MIB = 1024 * 1024

_CONTENT_TYPES = {"png": "image/png", "webp": "image/webp"}

# Magic numbers of formats a contributor might rename to .svg, so the rejection can name them.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"%PDF", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x00\x00\x01\x00", "ico"),
)
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class RenderSpec:
    """What to produce and the limits an input must respect. Picklable: sent to workers once."""

    widths: tuple[int, ...] = (64, 128, 256, 512)
    formats: tuple[str, ...] = ("png", "webp")
    webp_quality: int = 80
    webp_effort: int = 4
    webp_lossless: bool = False
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
        unknown = set(self.formats) - _CONTENT_TYPES.keys()
        if not self.formats or unknown:
            raise ValueError(f"formats must be a non-empty subset of png, webp: {self.formats!r}")


@dataclass(frozen=True)
class Rendition:
    width: int
    height: int
    format: str
    data: bytes

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class RenderResult:
    source_width: int
    source_height: int
    renditions: tuple[Rendition, ...]


class RenderRejected(Exception):
    """The SVG cannot be rendered; ``reason`` is shown to the contributor. Not retryable."""

    def __init__(self, reason: str) -> None:
        # Passing reason to Exception keeps it in .args, so the exception pickles across the
        # process-pool boundary intact.
        super().__init__(reason)
        self.reason = reason


def configure_vips(max_cache_mem: int = 64 * MIB) -> None:
    """Per-process libvips setup for render workers. Call once, before any render.

    Blocks every loader except SVG: libvips marks svgload untrusted, so blocking untrusted
    operations would block SVG too; blocking by class keeps exactly the one loader we need.
    Note that this also stops the process from decoding PNG/WebP, so never call it in a process
    that must read images back (tests, the previewer).
    """
    pyvips.operation_block_set("VipsForeignLoad", True)
    pyvips.operation_block_set("VipsForeignLoadSvg", False)
    # Each render is a new buffer, so the operation cache rarely hits; keep it small so a
    # long-lived worker's memory stays flat.
    pyvips.cache_set_max_mem(max_cache_mem)
    pyvips.cache_set_max(100)
    # We scale with processes (about 1.9x for two) rather than libvips threads (about 1.4x).
    pyvips.concurrency_set(1)


def render_svg(svg: bytes, spec: RenderSpec) -> RenderResult:
    """Render ``svg`` at every width in ``spec``, each encoded to every format in ``spec``.

    Raises RenderRejected with a contributor-readable reason for anything libvips refuses or
    anything over the spec's limits.
    """
    _check_bytes(svg, spec)
    source_width, source_height = _declared_size(svg)
    _check_declared_size(source_width, source_height, spec)
    renditions: list[Rendition] = []
    for width in spec.widths:
        height = max(1, round(width * source_height / source_width))
        image = _rasterise(svg, source_width, source_height, width, height)
        renditions.extend(_encode(image, spec))
    return RenderResult(source_width, source_height, tuple(renditions))


def _check_bytes(svg: bytes, spec: RenderSpec) -> None:
    if len(svg) > spec.max_input_bytes:
        raise RenderRejected(
            f"is {len(svg):,} bytes, more than the limit of {spec.max_input_bytes:,}"
        )
    if svg.startswith(_GZIP_MAGIC):
        # librsvg inflates gzip transparently; the byte cap would then bound nothing.
        raise RenderRejected("is gzip-compressed (svgz); upload a plain SVG")
    for magic, name in _MAGIC:
        if svg.startswith(magic):
            raise RenderRejected(f"is not an SVG image (libvips saw {name})")


def _declared_size(svg: bytes) -> tuple[int, int]:
    """Parse the SVG (no rasterising: libvips images are lazy) and return its declared size."""
    try:
        header = pyvips.Image.svgload_buffer(svg)
    except pyvips.Error as error:
        raise _rejection(error) from None
    return int(header.width), int(header.height)


def _check_declared_size(width: int, height: int, spec: RenderSpec) -> None:
    if width > spec.max_side or height > spec.max_side:
        raise RenderRejected(
            f"declares {width}×{height} pixels, a side longer than the limit of {spec.max_side:,}"
        )
    if width * height > spec.max_declared_pixels:
        raise RenderRejected(
            f"declares {width}×{height} pixels, more than the limit of {spec.max_declared_pixels:,}"
        )
    if max(width / height, height / width) > spec.max_aspect_ratio:
        raise RenderRejected(
            f"declares {width}×{height} pixels, more elongated than the limit of "
            f"{spec.max_aspect_ratio:g}:1"
        )


def _rasterise(
    svg: bytes, source_width: int, source_height: int, width: int, height: int
) -> pyvips.Image:
    """Render the vector straight at the target size: sharp at every size, no upscaled bitmaps.

    Same as ``thumbnail_buffer`` does for SVG (loader ``scale``), but with the loader named, so
    no format sniffing can pick another loader.
    """
    try:
        # A very wide SVG at a small width would come out 0 rows high, which libvips refuses:
        # render it one row high and let the size fix below squeeze the width.
        scale = max(width / source_width, 1 / source_height)
        image = pyvips.Image.svgload_buffer(svg, scale=scale)
        if (image.width, image.height) != (width, height):
            # libvips rounds like we do (checked over the corpus), so this is only the 1-row case
            # above or a rounding surprise.
            # thumbnail_image premultiplies alpha, so edges stay clean.
            image = image.thumbnail_image(width, height=height, size="force")
        image = _as_srgb_with_alpha(image)
        # Encoding twice from a lazy image would rasterise twice: materialise once.
        return image.copy_memory()
    except pyvips.Error as error:
        raise _rejection(error) from None


def _as_srgb_with_alpha(image: pyvips.Image) -> pyvips.Image:
    # svgload always yields 8-bit sRGB + alpha today; normalise anyway, encoders keep what
    # they are given and a grey or alpha-less rendition would surprise every consumer.
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    if not image.hasalpha():
        image = image.addalpha()
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def _encode(image: pyvips.Image, spec: RenderSpec) -> list[Rendition]:
    renditions = []
    for fmt in spec.formats:
        try:
            data = _encode_one(image, fmt, spec)
        except pyvips.Error as error:
            raise _rejection(error) from None
        renditions.append(Rendition(int(image.width), int(image.height), fmt, data))
    return renditions


def _encode_one(image: pyvips.Image, fmt: str, spec: RenderSpec) -> bytes:
    # keep="none": no metadata (XMP, ICC) in public previews; it only costs bytes.
    if fmt == "png":
        data = image.write_to_buffer(
            ".png", compression=spec.png_compression, palette=spec.png_palette, keep="none"
        )
    else:
        data = image.write_to_buffer(
            ".webp",
            Q=spec.webp_quality,
            effort=spec.webp_effort,
            lossless=spec.webp_lossless,
            keep="none",
        )
    return bytes(data)


def _rejection(error: pyvips.Error) -> RenderRejected:
    return RenderRejected(f"could not be rendered: {_libvips_message(error)}")


def _libvips_message(error: pyvips.Error) -> str:
    """The first informative line of a libvips error, without the 'unable to call' wrapper."""
    detail = getattr(error, "detail", "") or ""
    for line in str(detail).splitlines():
        line = line.strip()
        for prefix in ("glib: ", "svgload_buffer: ", "VipsForeignLoad: "):
            line = line.removeprefix(prefix)
        if line:
            return line[:200]
    return str(getattr(error, "message", "") or "unknown libvips error").strip()[:200]
