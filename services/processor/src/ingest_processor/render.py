"""Render one untrusted SVG into PNG and WebP renditions with libvips.

Runs inside worker processes (see ``pool.py``); every function here is synchronous and
CPU-bound. The SVG is hostile until proven otherwise, so the order is: byte-size cap, format
sniff, one streaming XML pass that reads the root's geometry (no tree, no rasterising), caps on
the declared size, and only then the rasterising at each target width.

The SVG loader is always called explicitly (``svgload_buffer``), never through libvips' format
sniffing, so a PNG renamed ``.svg`` fails here even in a process where ``configure_vips`` has not
run. ``configure_vips`` additionally blocks every other loader in worker processes (defence in
depth, see DESIGN.md).

Renditions are drawn as a browser draws the SVG in an ``<img>`` of the rendition's width: the
size comes from CSS rules (96 px per inch, 16 px per em), not librsvg's (72 dpi, 12 px), and the
artwork is scaled by exactly ``width / intrinsic width`` from the top-left corner. libvips can
only hand librsvg a whole-pixel viewport, into which librsvg fits the artwork, shrinking it when
the height rounds down (a 20:1 strip lost 8 of 128 columns that way). So each width is rendered
from a copy of the document whose root ``<svg>`` tag says exactly which user-space rectangle
fills exactly which pixel canvas (``Geometry.root_attributes``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyvips
from ingest_common.imaging import as_srgb_with_alpha

from ingest_processor.spec import (
    CONTENT_TYPES,
    DEFAULT_WEBP_MODE,
    MIB,
    WEBP_MODES,
    Only,
    RenderRejected,
    RenderSpec,
    WebpMode,
)
from ingest_processor.svgdoc import (
    CSS_DPI,
    LIBVIPS_RESOLUTION,
    Document,
    Geometry,
    geometry_of,
    read_document,
)

if TYPE_CHECKING:
    from ingest_common.s3_put_blocking import PutOutcome

__all__ = [
    "DEFAULT_WEBP_MODE",
    "MIB",
    "WEBP_MODES",
    "Only",
    "RenderRejected",
    "RenderResult",
    "RenderSpec",
    "Rendition",
    "WebpMode",
    "configure_vips",
    "render_svg",
]


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
# libvips' operation cache in a render worker (see configure_vips).
_VIPS_CACHE_MAX_MEM = 64 * MIB


@dataclass(frozen=True)
class Rendition:
    width: int
    height: int
    format: str
    data: bytes
    # Wall-clock ns in the worker, for the processor's render spans and metrics; the first
    # format of a width includes rasterising it.
    started_ns: int = field(compare=False)
    ended_ns: int = field(compare=False)
    # Where the worker that rendered it put it, when asked to store it (`data` is then empty:
    # the bytes never cross the worker's socket).
    stored: PutOutcome | None = field(default=None, compare=False)
    # WebP only: whether this SVG's WebP came out lossless (auto mode's choice, or the set
    # mode). The previewer makes a family's mosaic lossless when every tile's is.
    lossless: bool | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    @property
    def size(self) -> int:
        """Its encoded bytes' length, stored or not."""
        return self.stored.size if self.stored is not None else len(self.data)


@dataclass(frozen=True)
class RenderResult:
    # The SVG's intrinsic size in CSS pixels, rounded (what a browser shows it at).
    source_width: int
    source_height: int
    renditions: tuple[Rendition, ...]
    # What the renditions leave out that the contributor should know (e.g. an embedded image
    # the renderer declined), one sentence each.
    warnings: tuple[str, ...] = ()


def configure_vips() -> None:
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
    pyvips.cache_set_max_mem(_VIPS_CACHE_MAX_MEM)
    pyvips.cache_set_max(100)
    # We scale with processes (about 1.9x for two) rather than libvips threads (about 1.4x).
    pyvips.concurrency_set(1)


def render_svg(svg: bytes, spec: RenderSpec, only: Only = None) -> RenderResult:
    """Render ``svg`` at every width in ``spec``, each encoded to every format in ``spec``.

    With ``only`` (``(width, format)`` pairs of the spec), just those renditions, byte for
    byte what the full render makes of them: a backfill of one missing size renders that size.
    In auto WebP mode the smallest width is still encoded to WebP, as it decides the mode.

    Raises RenderRejected with a contributor-readable reason for anything libvips refuses,
    anything over the spec's limits, and SVGs that have no size a browser could scale.
    """
    wanted = _wanted(spec, only)
    _check_bytes(svg, spec)
    document = read_document(svg)
    geometry = geometry_of(document.root)
    _check_declared_size(geometry, spec)
    encoder = _Encoder(spec)
    decider = _auto_decider(spec, wanted)
    by_width: dict[int, list[Rendition]] = {}
    # Smallest first: in auto mode the smallest rendition decides lossy or lossless WebP.
    for width in sorted({w for w, _ in wanted} | ({decider} if decider is not None else set())):
        formats = [
            f for f in spec.formats if (width, f) in wanted or (width, f) == (decider, "webp")
        ]
        started_ns = time.time_ns()
        height = _rendition_height(width, geometry.width, geometry.height)
        image = _rasterise(document, geometry, width, height)
        by_width[width] = encoder.encode(image, started_ns, formats)
    renditions = [
        r for width in spec.widths for r in by_width.get(width, ()) if (width, r.format) in wanted
    ]
    source_width, source_height = (max(1, round(side)) for side in geometry.size)
    return RenderResult(source_width, source_height, tuple(renditions), document.warnings)


def _rendition_height(width: int, source_width: float, source_height: float) -> int:
    """The height of a ``width``-wide rendition: the aspect ratio's, rounded, at least 1."""
    return max(1, round(width * source_height / source_width))


def _wanted(spec: RenderSpec, only: Only) -> set[tuple[int, str]]:
    every = {(width, fmt) for width in spec.widths for fmt in spec.formats}
    if only is None:
        return every
    if unknown := set(only) - every:
        raise ValueError(f"not renditions of this spec: {sorted(unknown)}")
    return set(only)


def _auto_decider(spec: RenderSpec, wanted: set[tuple[int, str]]) -> int | None:
    """The width whose WebP picks lossy or lossless for every width, if that is to be picked."""
    if spec.webp_mode != "auto" or not any(fmt == "webp" for _, fmt in wanted):
        return None
    return min(spec.widths)


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


def _check_declared_size(geometry: Geometry, spec: RenderSpec) -> None:
    width, height = geometry.size
    size = f"{_pixels(width)}×{_pixels(height)} pixels"
    if max(width, height) > spec.max_side:
        raise RenderRejected(
            f"declares {size}, a side longer than the limit of {spec.max_side:,}{geometry.hint}"
        )
    if width * height > spec.max_declared_pixels:
        raise RenderRejected(
            f"declares {size}, more than the limit of {spec.max_declared_pixels:,}{geometry.hint}"
        )
    if max(width / height, height / width) > spec.max_aspect_ratio:
        raise RenderRejected(
            f"declares {size}, more elongated than the limit of {spec.max_aspect_ratio:g}:1"
        )


def _pixels(value: float) -> str:
    """A declared side for a reason: 24, 37.8, 1000000000 (no exponent, no float noise)."""
    if value >= 1e15:
        return f"{value:.3g}"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _rasterise(document: Document, geometry: Geometry, width: int, height: int) -> pyvips.Image:
    """Render the vector straight at the target size: sharp at every size, no upscaled bitmaps.

    The root tag of this copy makes librsvg's viewport exactly ``width``×``height`` pixels with
    the user-space rectangle that a browser shows there, so nothing is squeezed or shrunk. The
    loader is named, so no format sniffing can pick another loader.

    Rasterising once at the largest width and downscaling that for the smaller ones was
    measured and not adopted (issue 13, point 5; bench/README.md): on fluent's filter-heavy
    emoji it saves about a tenth of the CPU (the largest raster is most of it), and the 64 px
    rendition lands at 30 dB mean PSNR (24 dB worst) from the vector render, below lossy
    WebP's own error; librsvg draws filters and hairlines at each size, a downscale cannot.
    """
    svg = document.with_root(geometry.root_attributes(width, height, document.root))
    try:
        # dpi: librsvg converts mm, pt, in, ... in the content at 96 per inch, as CSS does;
        # libvips also multiplies the output by dpi / 72, which the scale undoes.
        image = pyvips.Image.svgload_buffer(svg, dpi=CSS_DPI, scale=72 / CSS_DPI)
        # ... and records 96 dpi, which PNG keeps (pHYs). Keep libvips' default instead: an
        # ordinary icon's renditions stay byte for byte what they were, so re-renders and
        # backfills rewrite nothing.
        image = image.copy(xres=LIBVIPS_RESOLUTION, yres=LIBVIPS_RESOLUTION)
        if (image.width, image.height) != (width, height):
            # Cannot happen with the root tag above (integer pixel sizes, total scale 1); should
            # librsvg ever disagree, cut or pad rather than squeeze, which would distort.
            image = image.gravity("north-west", width, height, extend="background")
        image = as_srgb_with_alpha(image)
        # Encoding twice from a lazy image would rasterise twice: materialise once.
        return image.copy_memory()
    except pyvips.Error as error:
        raise _rejection(error) from None


class _Encoder:
    """Encodes one SVG's renditions; remembers the WebP mode auto chose for this SVG."""

    def __init__(self, spec: RenderSpec) -> None:
        self.spec = spec
        self.lossless = None if spec.webp_mode == "auto" else spec.webp_mode == "lossless"

    def encode(
        self, image: pyvips.Image, started_ns: int, formats: Sequence[str]
    ) -> list[Rendition]:
        renditions = []
        for fmt in formats:
            try:
                data = self._png(image) if fmt == "png" else self._webp(image)
            except pyvips.Error as error:
                raise _rejection(error) from None
            ended_ns = time.time_ns()
            renditions.append(
                Rendition(
                    int(image.width),
                    int(image.height),
                    fmt,
                    data,
                    started_ns,
                    ended_ns,
                    lossless=self.lossless if fmt == "webp" else None,
                )
            )
            started_ns = ended_ns
        return renditions

    def _png(self, image: pyvips.Image) -> bytes:
        # keep="none": no metadata (XMP, ICC) in public previews; it only costs bytes.
        spec = self.spec
        return bytes(
            image.write_to_buffer(
                ".png", compression=spec.png_compression, palette=spec.png_palette, keep="none"
            )
        )

    def _webp(self, image: pyvips.Image) -> bytes:
        if self.lossless is not None:
            return bytes(image.write_to_buffer(".webp", **self.spec.webp_options(self.lossless)))
        # First (smallest) rendition in auto mode: encode both ways, keep the winner's mode for
        # every width. The loser costs ~1% of the SVG's encoding work.
        lossless = bytes(image.write_to_buffer(".webp", **self.spec.webp_options(True)))
        lossy = bytes(image.write_to_buffer(".webp", **self.spec.webp_options(False)))
        self.lossless = len(lossless) <= len(lossy) * self.spec.webp_auto_slack
        return lossless if self.lossless else lossy


def _rejection(error: pyvips.Error) -> RenderRejected:
    return RenderRejected(f"could not be rendered: {_libvips_message(error)}")


# librsvg's own limits, in the words a contributor can act on. svgcheck refuses files over the
# first two before upload, in the same words (its MAX_USE_EXPANSION and MAX_ELEMENTS).
_LIBRSVG_LIMITS = (
    (
        "referenced elements",
        "its <use> elements expand to more than 500,000 elements (copies of copies of "
        'groups, a "use bomb"); draw the repeated artwork with fewer levels of <use>',
    ),
    (
        "XML elements",
        "it has more than 1,000,000 elements, more than the renderer loads; simplify it",
    ),
    (
        "circular reference",
        "its references form a loop (an element uses or refers to itself, directly or "
        "through others); remove the loop",
    ),
)


def _libvips_message(error: pyvips.Error) -> str:
    """The most specific line of a libvips error, without the 'unable to call' wrapper.

    librsvg's reason comes on the line after libvips' generic "SVG rendering failed".
    """
    detail = getattr(error, "detail", "") or ""
    lines = []
    for line in str(detail).splitlines():
        line = line.strip()
        for prefix in ("glib: ", "svgload_buffer: ", "VipsForeignLoad: "):
            line = line.removeprefix(prefix)
        if line:
            lines.append(line)
    for line in lines:
        for words, reason in _LIBRSVG_LIMITS:
            if words in line:
                return reason
    specific = [line for line in lines if line != "SVG rendering failed"]
    if specific:
        return specific[0][:200]
    if lines:
        return lines[0][:200]
    return str(getattr(error, "message", "") or "unknown libvips error").strip()[:200]
