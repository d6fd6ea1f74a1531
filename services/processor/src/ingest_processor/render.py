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
fills exactly which pixel canvas (``_Geometry.root_attributes``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args
from urllib.parse import unquote_to_bytes
from xml.parsers import expat

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
    # The SVG's intrinsic size in CSS pixels, rounded (what a browser shows it at).
    source_width: int
    source_height: int
    renditions: tuple[Rendition, ...]
    # What the renditions leave out that the contributor should know (e.g. an embedded image
    # the renderer declined), one sentence each.
    warnings: tuple[str, ...] = ()


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

    Raises RenderRejected with a contributor-readable reason for anything libvips refuses,
    anything over the spec's limits, and SVGs that have no size a browser could scale.
    """
    wanted = _wanted(spec, only)
    _check_bytes(svg, spec)
    document = _read_document(svg)
    geometry = _geometry(document.root)
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


def _check_declared_size(geometry: _Geometry, spec: RenderSpec) -> None:
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


def _rasterise(document: _Document, geometry: _Geometry, width: int, height: int) -> pyvips.Image:
    """Render the vector straight at the target size: sharp at every size, no upscaled bitmaps.

    The root tag of this copy makes librsvg's viewport exactly ``width``×``height`` pixels with
    the user-space rectangle that a browser shows there, so nothing is squeezed or shrunk. The
    loader is named, so no format sniffing can pick another loader.
    """
    svg = document.with_root(geometry.root_attributes(width, height, document.root))
    try:
        # dpi: librsvg converts mm, pt, in, ... in the content at 96 per inch, as CSS does;
        # libvips also multiplies the output by dpi / 72, which the scale undoes.
        image = pyvips.Image.svgload_buffer(svg, dpi=_CSS_DPI, scale=72 / _CSS_DPI)
        # ... and records 96 dpi, which PNG keeps (pHYs). Keep libvips' default instead: an
        # ordinary icon's renditions stay byte for byte what they were, so re-renders and
        # backfills rewrite nothing.
        image = image.copy(xres=_LIBVIPS_RESOLUTION, yres=_LIBVIPS_RESOLUTION)
        if (image.width, image.height) != (width, height):
            # Cannot happen with the root tag above (integer pixel sizes, total scale 1); should
            # librsvg ever disagree, cut or pad rather than squeeze, which would distort.
            image = image.gravity("north-west", width, height, extend="background")
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


# --- the document: one streaming pass over the XML ---------------------------------------------

_SVG_NAMESPACE = "http://www.w3.org/2000/svg"
_XLINK_HREF = "http://www.w3.org/1999/xlink href"
# Encodings that librsvg's XML parser and this module read alike (svgcheck accepts the same).
_CODECS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "us-ascii": "ascii",
    "ascii": "ascii",
    "iso-8859-1": "latin-1",
    "iso_8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "utf-16": "utf-16",
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
}
_XML_DECLARATION = re.compile(r"<\?xml\s[^>]*?\?>")
_DECLARED_ENCODING = re.compile(r"""(\sencoding\s*=\s*)(["'])([^"']*)\2""")
# Attributes of the root tag that each width's copy replaces (see _Geometry.root_attributes).
_REPLACED = {b"width", b"height", b"viewBox", b"preserveAspectRatio", b"style"}
_TAG_NAME = re.compile(rb"<[^\s/>]+")
_ATTRIBUTE = re.compile(rb"""\s*([^\s=/>]+)\s*=\s*("[^"]*"|'[^']*')""")
_TAG_CLOSE = re.compile(rb"\s*/?>\Z")
# librsvg draws only these from data: URLs, and only when the data is what the type says.
_DATA_URL = re.compile(r"data:([^;,]*)((?:;[^;,]*)*?)(;base64)?,", re.IGNORECASE)
_DRAWN_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/jpg": (b"\xff\xd8\xff",),
    "": (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"),  # no type: librsvg sniffs
}
_IMAGE_KINDS = (
    (b"GIF8", "a GIF"),
    (b"RIFF", "a WebP"),
    (b"\x89PNG", "a PNG"),
    (b"\xff\xd8\xff", "a JPEG"),
    (b"<", "an SVG"),
)


@dataclass(frozen=True)
class _Document:
    """The SVG as UTF-8 (what librsvg is given), its root tag split for rewriting, and what the
    pass over it found."""

    data: bytes
    root: dict[str, str]  # the root <svg>'s attributes, as expat reads them
    root_start: int  # byte offsets of the root start tag in data
    root_end: int
    kept: bytes  # the root tag without the attributes _REPLACED and without its closing ">"
    close: bytes  # ">" or "/>"
    warnings: tuple[str, ...]

    def with_root(self, attributes: str) -> bytes:
        """The document with ``attributes`` in place of the root tag's _REPLACED ones."""
        return b"".join(
            (
                self.data[: self.root_start],
                self.kept,
                attributes.encode(),
                self.close,
                self.data[self.root_end :],
            )
        )


class _Inspector:
    """Expat handlers: the root element's tag and attributes, and every embedded image."""

    def __init__(self, parser: expat.XMLParserType) -> None:
        self.parser = parser
        self.root: tuple[int, dict[str, str]] | None = None
        self.images = 0
        self.warnings: list[str] = []

    def start(self, name: str, attributes: dict[str, str]) -> None:
        if self.root is None:
            _check_root_name(name)
            self.root = (self.parser.CurrentByteIndex, attributes)
        if name in (f"{_SVG_NAMESPACE} image", f"{_SVG_NAMESPACE} feImage"):
            self.images += 1
            # SVG 2: href wins over xlink:href.
            href = attributes.get("href", attributes.get(_XLINK_HREF, ""))
            identifier = attributes.get("id")
            label = f"'{identifier}'" if identifier else f"number {self.images}"
            why = _declined_image(href)
            if why is not None:
                self.warnings.append(f"embedded image {label} was not drawn: {why}")

    def entity(self, *args: object) -> None:
        # Entities are how billion-laughs and external-entity attacks start; no icon needs them.
        raise RenderRejected("uses XML entities, which are not allowed")


def _check_root_name(name: str) -> None:
    if name == f"{_SVG_NAMESPACE} svg":
        return
    if name == "svg":
        raise RenderRejected(
            f'could not be rendered: the <svg> element has no xmlns="{_SVG_NAMESPACE}"'
        )
    raise RenderRejected(
        f"could not be rendered: its top element is <{name.rsplit(' ', 1)[-1]}>, not <svg>"
    )


def _declined_image(href: str) -> str | None:
    """Why librsvg will not draw this image reference, or None if it will (or it is no image)."""
    href = href.strip()
    if not href or href.startswith("#"):  # feImage of an element of this document
        return None
    match = _DATA_URL.match(href)
    if match is None:
        return "it refers to a file outside the SVG; embed it as a PNG or JPEG data: URL"
    media_type = match[1].strip().lower()
    if media_type == "image/svg+xml":
        return None  # librsvg draws it (svgcheck refuses it before upload)
    head = _data_head(href[match.end() :], base64_encoded=match[3] is not None)
    if head is None:
        return "its data: URL is not valid base64"
    magics = _DRAWN_TYPES.get(media_type)
    if magics is None:
        return f"it is {media_type or 'of no type'}; only PNG and JPEG data: URLs are rendered"
    if not head.startswith(magics):
        found = next((what for magic, what in _IMAGE_KINDS if head.startswith(magic)), None)
        labelled = f"labelled {media_type}" if media_type else "a data: URL"
        return f"it is {labelled} but its data is {found or 'not a PNG or JPEG image'}"
    return None


def _data_head(payload: str, base64_encoded: bool) -> bytes | None:
    """The first bytes of a data: URL's payload (enough for a magic number)."""
    if not base64_encoded:
        return unquote_to_bytes(payload[:64])[:12]
    text = "".join(payload[:64].split())[:16]
    try:
        return base64.b64decode(text[: len(text) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        return None


def _read_document(svg: bytes) -> _Document:
    """One expat pass: the root's geometry attributes and tag position, and image warnings.

    Expat builds no tree, so memory stays flat whatever the nesting; entities are refused.
    """
    data = _as_utf8(svg)
    parser = expat.ParserCreate(namespace_separator=" ")
    inspector = _Inspector(parser)
    parser.StartElementHandler = inspector.start
    parser.EntityDeclHandler = inspector.entity
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        if not data.strip():
            raise RenderRejected("could not be rendered: the file is empty") from None
        raise RenderRejected(
            f"could not be rendered: it is not well-formed XML (line {error.lineno}, "
            f"column {error.offset + 1})"
        ) from None
    if inspector.root is None:  # expat raises first ("no element found"); for mypy
        raise RenderRejected("could not be rendered: it has no <svg> element")
    start, root = inspector.root
    end = _tag_end(data, start)
    kept, close = _split_root_tag(data[start:end])
    return _Document(data, root, start, end, kept, close, tuple(inspector.warnings))


def _as_utf8(svg: bytes) -> bytes:
    """The document in UTF-8 without a byte-order mark, its XML declaration saying so.

    Our parser, the root-tag rewrite and librsvg then all read the same characters. UTF-8
    input, nearly every file, comes back as it is.
    """
    if svg.startswith(b"\xef\xbb\xbf"):
        codec, declared = "utf-8-sig", None
    elif svg.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec, declared = "utf-16", None
    elif svg.startswith(b"<\x00"):
        codec, declared = "utf-16-le", None
    elif svg.startswith(b"\x00<"):
        codec, declared = "utf-16-be", None
    else:
        # An ASCII-compatible file: its declaration (ASCII itself) names the encoding.
        declaration = _XML_DECLARATION.match(svg[:200].decode("latin-1"))
        found = declaration and _DECLARED_ENCODING.search(declaration[0])
        if not found:
            return svg  # XML's default: UTF-8 (expat checks it)
        declared = found[3]
        codec = _CODECS.get(declared.strip().lower(), "")
        if not codec:
            raise RenderRejected(
                f'declares the text encoding "{declared}", which is not supported; save it as UTF-8'
            )
        if codec == "utf-8":
            return svg
    try:
        text = svg.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError:
        name = declared or codec.upper()
        raise RenderRejected(f"is not valid {name} text; save it as UTF-8") from None
    declaration = _XML_DECLARATION.match(text)
    if declaration:
        fixed = _DECLARED_ENCODING.sub(r"\1\2UTF-8\2", declaration[0])
        text = fixed + text[declaration.end() :]
    return text.encode("utf-8")


def _tag_end(data: bytes, start: int) -> int:
    """The offset just past the start tag at ``start`` (expat has checked it is well formed)."""
    quote = 0
    for offset in range(start, len(data)):
        byte = data[offset]
        if quote:
            if byte == quote:
                quote = 0
        elif byte in b"\"'":
            quote = byte
        elif byte == ord(">"):
            return offset + 1
    raise RenderRejected("could not be rendered: its <svg> tag is not closed")


def _split_root_tag(tag: bytes) -> tuple[bytes, bytes]:
    """(the tag without the _REPLACED attributes and its end, the end: ">" or "/>")."""
    name = _TAG_NAME.match(tag)
    assert name is not None  # expat parsed this tag
    kept = [name[0]]
    position = name.end()
    while attribute := _ATTRIBUTE.match(tag, position):
        if attribute[1] not in _REPLACED:
            kept.append(attribute[0])
        position = attribute.end()
    close = tag[position:]
    if not _TAG_CLOSE.match(close):
        raise RenderRejected("could not be rendered: its <svg> tag could not be read")
    return b"".join(kept), close.strip()


# --- the root's geometry, as a browser reads it ------------------------------------------------

_CSS_DPI = 96.0
_LIBVIPS_RESOLUTION = 72 / 25.4  # pixels per mm at libvips' default 72 dpi
# CSS 'medium': the font size of text that sets none, and what the root's em and ex refer to.
_DEFAULT_FONT_SIZE = 16.0
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_LENGTH = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+|%)?\s*\Z")
_SEPARATOR = r"(?:\s*,\s*|\s+)"
_VIEW_BOX = re.compile(rf"\s*{_SEPARATOR.join([f'({_NUMBER})'] * 4)}\s*\Z")
_PX_PER = {
    "": 1.0,
    "px": 1.0,
    "in": _CSS_DPI,
    "cm": _CSS_DPI / 2.54,
    "mm": _CSS_DPI / 25.4,
    "q": _CSS_DPI / 101.6,
    "pt": _CSS_DPI / 72,
    "pc": _CSS_DPI / 6,
}
# CSS without font metrics: 1ex = 0.5em (resvg does the same; browsers use the font's x-height).
_EM_PER = {"em": 1.0, "ex": 0.5}
_STYLE_DECLARATION = re.compile(
    r"(?:^|;)\s*(width|height|font-size)\s*:\s*([^;!]*?)\s*(?:!\s*important\s*)?(?=;|$)",
    re.IGNORECASE,
)
_ALIGN = {
    f"x{x}Y{y}": (fx, fy)
    for x, fx in (("Min", 0.0), ("Mid", 0.5), ("Max", 1.0))
    for y, fy in (("Min", 0.0), ("Mid", 0.5), ("Max", 1.0))
}
_NO_SIZE_HINT = 'add a viewBox such as viewBox="0 0 24 24" that frames the artwork'


@dataclass(frozen=True)
class _Geometry:
    """Intrinsic size (CSS px) and the user-space rectangle the root maps onto it."""

    width: float
    height: float
    view_box: tuple[float, float, float, float]
    align: tuple[float, float] | None  # None: preserveAspectRatio="none"
    slice: bool
    hint: str = ""  # added to size-limit reasons: how to fix where the size comes from

    @property
    def size(self) -> tuple[float, float]:
        return self.width, self.height

    def root_attributes(self, width: int, height: int, root: dict[str, str]) -> str:
        """Root attributes that draw the artwork at exactly ``width / self.width`` per CSS px,
        from the top-left corner, on a ``width``×``height`` canvas.

        The canvas's last row may cover a fraction of a pixel more or less than the artwork (the
        height is rounded); a browser crops or pads that fraction alike.
        """
        x, y, box_width, box_height = self.view_box
        # preserveAspectRatio: the user-space to intrinsic-viewport map, as the SVG spec says.
        sx, sy = self.width / box_width, self.height / box_height
        tx, ty = -x * sx, -y * sy
        if self.align is not None:
            sx = sy = max(sx, sy) if self.slice else min(sx, sy)
            tx = -x * sx + self.align[0] * (self.width - box_width * sx)
            ty = -y * sy + self.align[1] * (self.height - box_height * sy)
        # The canvas covers intrinsic [0, self.width] × [0, height / scale]; in user units:
        scale = width / self.width
        box = (-tx / sx, -ty / sy, self.width / sx, height / scale / sy)
        style = root.get("style", "").strip().rstrip(";")
        # Inline !important outranks every stylesheet rule that sizes the root.
        style += f"{';' if style else ''}width:{width}px!important;height:{height}px!important"
        attributes = (
            f' width="{width}" height="{height}" viewBox="{" ".join(map(repr, box))}"'
            f' preserveAspectRatio="none" style="{_escape(style)}"'
        )
        if "font-size" not in root and not _style(root).get("font-size"):
            # librsvg's default is 12 px; a browser's (and the root em above) is 16 px. As a
            # presentation attribute it yields to any font-size the file sets itself.
            attributes += f' font-size="{_DEFAULT_FONT_SIZE:g}"'
        return attributes


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _style(root: dict[str, str]) -> dict[str, str]:
    """width, height and font-size from the root's style attribute (CSS beats attributes)."""
    return {m[1].lower(): m[2] for m in _STYLE_DECLARATION.finditer(root.get("style", ""))}


def _length(text: str | None, font_size: float) -> float | None:
    """A width or height in CSS px; None for auto, percentages and what a browser ignores."""
    match = _LENGTH.match(text or "")
    if match is None:
        return None
    value, unit = float(match[1]), (match[2] or "").lower()
    if value < 0:  # invalid: a browser ignores it
        return None
    if unit in _PX_PER:
        return value * _PX_PER[unit]
    if unit in _EM_PER:
        return value * _EM_PER[unit] * font_size
    return None


def _geometry(root: dict[str, str]) -> _Geometry:
    """The root's intrinsic size and viewBox mapping, as a browser's <img> reads them.

    Both width and height lengths: that size. One, with a viewBox: the other from the viewBox's
    ratio. Neither (or percentages), with a viewBox: the viewBox's size, as librsvg and resvg
    take it (a browser has only the ratio). No viewBox and not both lengths: no size to scale
    the artwork from, refused (see _NO_SIZE_HINT).
    """
    style = _style(root)
    font_size = _length(style.get("font-size", root.get("font-size")), _DEFAULT_FONT_SIZE)
    font_size = font_size or _DEFAULT_FONT_SIZE
    width = _length(style.get("width", root.get("width")), font_size)
    height = _length(style.get("height", root.get("height")), font_size)
    if width == 0 or height == 0:
        raise RenderRejected("has a width or height of 0, so nothing of it is drawn")
    view_box = _view_box(root.get("viewBox"))
    if view_box is None:
        if width is None or height is None:
            neither = width is None and height is None
            what = "no width and height" if neither else "not both a width and a height"
            raise RenderRejected(
                f"has no viewBox and {what}, so its artwork has no size to scale from (a browser "
                f"draws it unscaled in a 300×150 box); {_NO_SIZE_HINT}"
            )
        return _Geometry(width, height, (0.0, 0.0, width, height), None, False)
    _, _, box_width, box_height = view_box
    hint = ""
    if width is None and height is None:
        width, height = box_width, box_height
        hint = "; its size is its viewBox's, as it has no width and height: add them"
    elif width is None:
        assert height is not None
        width = height * box_width / box_height
    elif height is None:
        height = width * box_height / box_width
    align, slice_ = _preserve_aspect_ratio(root.get("preserveAspectRatio"))
    return _Geometry(width, height, view_box, align, slice_, hint)


def _view_box(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    match = _VIEW_BOX.match(text)
    if match is None:
        raise RenderRejected(
            f'has a viewBox ("{text[:40]}") that is not four numbers: min-x, min-y, width, height'
        )
    x, y, width, height = (float(n) for n in match.groups())
    if not all(map(math.isfinite, (x, y, width, height))):
        raise RenderRejected(f'has a viewBox ("{text[:40]}") with numbers too large to draw')
    if width <= 0 or height <= 0:
        raise RenderRejected(
            "has a viewBox of zero or negative width or height, so nothing of it is drawn"
        )
    return x, y, width, height


def _preserve_aspect_ratio(text: str | None) -> tuple[tuple[float, float] | None, bool]:
    """(alignment factors or None for "none", slice?); the default, xMidYMid meet, if invalid."""
    words = (text or "").split()
    if words[:1] == ["defer"]:
        words = words[1:]
    if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("meet", "slice")):
        return _ALIGN["xMidYMid"], False
    if words[0] == "none":
        return None, False
    if words[0] not in _ALIGN:
        return _ALIGN["xMidYMid"], False
    return _ALIGN[words[0]], words[1:] == ["slice"]
