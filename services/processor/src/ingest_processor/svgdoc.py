"""An untrusted SVG as the render core reads it: one streaming XML pass (no tree) that
decodes it to UTF-8, finds its root tag, its embedded images, and the geometry a browser
would give it (CSS rules: 96 px per inch, 16 px per em), and rewrites the root tag so that
exactly one user-space rectangle fills exactly one pixel canvas. Plain Python, no libvips.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes
from xml.parsers import expat

from ingest_processor.spec import RenderRejected

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
# Attributes of the root tag that each width's copy replaces (see Geometry.root_attributes).
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
class Document:
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


def read_document(svg: bytes) -> Document:
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
    return Document(data, root, start, end, kept, close, tuple(inspector.warnings))


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

CSS_DPI = 96.0
LIBVIPS_RESOLUTION = 72 / 25.4  # pixels per mm at libvips' default 72 dpi
# CSS 'medium': the font size of text that sets none, and what the root's em and ex refer to.
_DEFAULT_FONT_SIZE = 16.0
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_LENGTH = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+|%)?\s*\Z")
_SEPARATOR = r"(?:\s*,\s*|\s+)"
_VIEW_BOX = re.compile(rf"\s*{_SEPARATOR.join([f'({_NUMBER})'] * 4)}\s*\Z")
_PX_PER = {
    "": 1.0,
    "px": 1.0,
    "in": CSS_DPI,
    "cm": CSS_DPI / 2.54,
    "mm": CSS_DPI / 25.4,
    "q": CSS_DPI / 101.6,
    "pt": CSS_DPI / 72,
    "pc": CSS_DPI / 6,
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
class Geometry:
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


def geometry_of(root: dict[str, str]) -> Geometry:
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
        return Geometry(width, height, (0.0, 0.0, width, height), None, False)
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
    return Geometry(width, height, view_box, align, slice_, hint)


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
