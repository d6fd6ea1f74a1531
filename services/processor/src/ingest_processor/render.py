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

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

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
# libvips' operation cache in a render worker (see configure_vips).
_VIPS_CACHE_MAX_MEM = 64 * MIB

# auto: per image, lossless if its smallest rendition comes out no bigger than ``webp_auto_slack``
# times the lossy one. Flat-colour icons are smaller (and exact) lossless, gradients are 4-5x
# smaller lossy; the smallest rendition decides because it costs ~1% of the pixels.
WebpMode = Literal["auto", "lossy", "lossless"]
WEBP_MODES: tuple[WebpMode, ...] = get_args(WebpMode)
# RenderSpec.webp_mode is a plain str (checked in __post_init__); typed here for the settings.
DEFAULT_WEBP_MODE: WebpMode = "auto"
# (method, quality) of libwebp's WebPConfigLosslessPreset, i.e. cwebp -z 0..9.
_LOSSLESS_PRESETS = (
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
    webp_lossless_level: int = 2
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
        unknown = set(self.formats) - _CONTENT_TYPES.keys()
        if not self.formats or unknown:
            raise ValueError(f"formats must be a non-empty subset of png, webp: {self.formats!r}")
        if self.webp_mode not in WEBP_MODES:
            raise ValueError(
                f"webp_mode must be one of {', '.join(WEBP_MODES)}: {self.webp_mode!r}"
            )
        if not 0 <= self.webp_lossless_level < len(_LOSSLESS_PRESETS):
            raise ValueError(f"webp_lossless_level must be 0-9, got {self.webp_lossless_level}")

    def webp_options(self, lossless: bool) -> dict[str, object]:
        """``webpsave`` arguments for one WebP rendition, lossy or lossless."""
        if lossless:
            # libwebp's lossless "quality" is compression effort, not fidelity; the preset pairs
            # it with a method exactly as cwebp -z does.
            method, effort = _LOSSLESS_PRESETS[self.webp_lossless_level]
            return {"lossless": True, "effort": method, "Q": effort, "keep": "none"}
        return {"Q": self.webp_quality, "effort": self.webp_effort, "keep": "none"}


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


# Which renditions to make: (width, format) pairs of the spec; None means every one.
Only = Collection[tuple[int, str]] | None


def render_svg(svg: bytes, spec: RenderSpec, only: Only = None) -> RenderResult:
    """Render ``svg`` at every width in ``spec``, each encoded to every format in ``spec``.

    With ``only`` (``(width, format)`` pairs of the spec), just those renditions, byte for
    byte what the full render makes of them: a backfill of one missing size renders that size.
    In auto WebP mode the smallest width is still encoded to WebP, as it decides the mode.

    Raises RenderRejected with a contributor-readable reason for anything libvips refuses or
    anything over the spec's limits.
    """
    wanted = _wanted(spec, only)
    _check_bytes(svg, spec)
    source_width, source_height = _declared_size(svg)
    _check_declared_size(source_width, source_height, spec)
    encoder = _Encoder(spec)
    decider = _auto_decider(spec, wanted)
    by_width: dict[int, list[Rendition]] = {}
    # Smallest first: in auto mode the smallest rendition decides lossy or lossless WebP.
    for width in sorted({w for w, _ in wanted} | ({decider} if decider is not None else set())):
        formats = [
            f for f in spec.formats if (width, f) in wanted or (width, f) == (decider, "webp")
        ]
        started_ns = time.time_ns()
        height = max(1, round(width * source_height / source_width))
        image = _rasterise(svg, source_width, source_height, width, height)
        by_width[width] = encoder.encode(image, started_ns, formats)
    renditions = [
        r for width in spec.widths for r in by_width.get(width, ()) if (width, r.format) in wanted
    ]
    return RenderResult(source_width, source_height, tuple(renditions))


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
                Rendition(int(image.width), int(image.height), fmt, data, started_ns, ended_ns)
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
