"""A cheap, safe sniff that a file is a plain, self-contained SVG before anything renders it.

Contributors' files are hostile until proven otherwise. This check runs in the batcher on
every file of a set, so it must be fast and bounded: the XML is streamed through defusedxml's
parser into a target that keeps only the current depth (no tree is built), and it stops at
the first problem. What it rejects:

- files that are something else renamed `.svg` (libvips would happily load a PNG);
- DTDs and entities (billion laughs, external entities);
- scripts, `foreignObject`, event-handler attributes (originals may be served to browsers);
- references to anything outside the file (`href`, `url(...)`, `@import`, stylesheet PIs),
  except same-document `#fragments` and embedded raster `data:` images;
- absurd nesting (renderers recurse).

Declared width/height are not checked here: the processor reads the header before rendering.
Every returned reason is a sentence for a contributor.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
MAX_DEPTH = 256

# Magic numbers of formats that contributors rename to .svg by mistake (or on purpose).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a compressed file (.svgz or .gz); upload the uncompressed .svg instead"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x01\x00", "a Windows icon (.ico)"),
    (b"8BPS", "a Photoshop document"),
    (b"%!PS", "a PostScript/EPS document"),
)

_FORBIDDEN_ELEMENTS = {
    "script": "contains a <script> element; scripts are not allowed",
    "foreignobject": "contains a <foreignObject> element (embedded HTML), which is not allowed",
    "handler": "contains a <handler> element (a script), which is not allowed",
}
# SMIL animation can rewrite an attribute to a javascript: URL or an event handler.
_ANIMATION_ELEMENTS = {"set", "animate", "animatetransform", "animatemotion", "animatecolor"}

_URL_FUNCTION = re.compile(r"url\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
# CSS functions that take a plain string as an address, without url().
_CSS_LOADER = re.compile(r"(?:image-set|src)\s*\(")
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,", re.IGNORECASE)
_XML_DECLARED_ENCODING = re.compile(r"^\s*<\?xml[^>]*?encoding\s*=\s*['\"]([^'\"]*)['\"]")
# Encodings under which the markup reads the same as our UTF-8/UTF-16 decoding. Anything
# else (UTF-7, EBCDIC, ...) could make a renderer or browser see markup we did not check.
_SAFE_DECLARED_ENCODINGS = {
    "utf-8", "utf8", "utf-16", "utf-16le", "utf-16be", "us-ascii", "ascii", "iso-8859-1",
    "latin-1", "latin1",
}  # fmt: skip


class _Rejected(Exception):
    """Raised from inside the parser target to stop at the first problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _local(name: str) -> str:
    """'{namespace}local' -> 'local' (lower-cased: SVG names are matched case-insensitively)."""
    return name.rsplit("}", 1)[-1].lower()


def _external_reference(value: str) -> str | None:
    """None if `value` points inside this file (or is an embedded raster image), else it."""
    value = value.strip()
    if not value or value.startswith("#") or _DATA_IMAGE.match(value):
        return None
    return value


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _external_reason(target: str) -> str:
    return (
        f'refers to an external file or web address ("{_shorten(target)}"), which is not '
        "allowed; embed everything in the SVG itself"
    )


def _check_css(text: str) -> None:
    lowered = text.lower()
    if "\\" in text:
        # `u\72l(...)` is url(...) to a CSS parser but not to the regex below.
        raise _Rejected("its CSS uses backslash escapes, which are not allowed")
    if "@import" in lowered:
        raise _Rejected("its CSS uses @import to load another file, which is not allowed")
    if _CSS_LOADER.search(lowered):
        raise _Rejected("its CSS loads images with image-set() or src(), which is not allowed")
    for match in _URL_FUNCTION.finditer(text):
        target = _external_reference(match.group(2))
        if target is not None:
            raise _Rejected(_external_reason(target))


class _SvgTarget:
    """Parser target: sees each element as it starts, keeps only depth and <style> text."""

    def __init__(self) -> None:
        self.depth = 0
        self.root_seen = False
        self.style_text: list[str] | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Rejected(f"its elements are nested more than {MAX_DEPTH} levels deep")
        if not self.root_seen:
            self.root_seen = True
            _check_root(tag)
        local = _local(tag)
        if local in _FORBIDDEN_ELEMENTS:
            raise _Rejected(_FORBIDDEN_ELEMENTS[local])
        _check_attributes(local, attrib)
        if local == "style":
            self.style_text = []

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.style_text is not None and _local(tag) == "style":
            _check_css("".join(self.style_text))
            self.style_text = None

    def data(self, text: str) -> None:
        if self.style_text is not None:
            self.style_text.append(text)

    def pi(self, target: str, data: str | None) -> None:
        # <?xml-stylesheet href="..."?> makes browsers fetch a stylesheet.
        if target.lower() == "xml-stylesheet":
            raise _Rejected(
                "it loads an external stylesheet (<?xml-stylesheet?>), which is not allowed"
            )

    def close(self) -> None:
        return None


def _check_root(tag: str) -> None:
    if tag == f"{{{SVG_NAMESPACE}}}svg":
        return
    if tag == "svg":
        raise _Rejected(
            f'the <svg> element has no xmlns="{SVG_NAMESPACE}" attribute; add it '
            "(without it the file is not recognised as SVG)"
        )
    raise _Rejected(f"this is not an SVG image: its top element is <{_local(tag)}>, not <svg>")


def _check_attributes(element: str, attrib: dict[str, str]) -> None:
    for name, value in attrib.items():
        local = _local(name)
        if local.startswith("on"):
            raise _Rejected(f'has an event-handler attribute "{local}" (a script), not allowed')
        if local == "href":
            target = _external_reference(value)
            if target is not None:
                raise _Rejected(_external_reason(target))
        if element in _ANIMATION_ELEMENTS and local == "attributename":
            # The animated name is written as in markup ("xlink:href"), not in {ns} form.
            animated = value.strip().rsplit(":", 1)[-1].lower()
            if animated == "href" or animated.startswith("on"):
                raise _Rejected(f'animates the "{animated}" attribute, which is not allowed')
        # Presentation attributes are CSS values too (fill="url(...)"); namespaced ones
        # (inkscape:, sodipodi:) are editor metadata, which may hold Windows paths.
        if "}" not in name and ("(" in value or local == "style"):
            _check_css(value)


def _sniff_other_format(data: bytes) -> str | None:
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return f"this is {what} renamed .svg, not an SVG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "this is a WebP image renamed .svg, not an SVG"
    return None


def _decode(data: bytes) -> str | None:
    """The text of an UTF-8 or UTF-16 file (BOM or XML's own autodetection), else None."""
    if data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"<\x00"):
        encoding = "utf-16-le"
    elif data.startswith(b"\x00<"):
        encoding = "utf-16-be"
    else:
        encoding = "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body"))


def _check_declared_encoding(text: str) -> str | None:
    match = _XML_DECLARED_ENCODING.match(text)
    if match and match.group(1).strip().lower() not in _SAFE_DECLARED_ENCODINGS:
        return f'it declares the text encoding "{match.group(1)}"; save it as UTF-8'
    return None


def _parse(text: str) -> str | None:
    # Text, not bytes: pyexpat then ignores the declared encoding, which was checked above.
    parser = DefusedXMLParser(
        target=_SvgTarget(), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(text)
        parser.close()
    except _Rejected as exc:
        return exc.reason
    except DefusedXmlException:
        return (
            "it uses XML entities or a DOCTYPE, which are not allowed "
            "(entity expansion / external entity)"
        )
    except ParseError as exc:
        line, column = exc.position
        return f"it is not well-formed XML (line {line}, column {column + 1}); it may be truncated"
    return None


def check_svg(data: bytes, max_bytes: int) -> str | None:
    """None if `data` is an acceptable plain SVG, else a reason a contributor can read."""
    if not data.strip():
        return "the file is empty"
    if len(data) > max_bytes:
        return f"the file is larger than the limit of {max_bytes:,} bytes ({len(data):,} bytes)"
    other = _sniff_other_format(data)
    if other is not None:
        return other
    text = _decode(data)
    if text is None:
        return "it is not text in UTF-8 or UTF-16; save it as UTF-8"
    if _looks_like_html(text):
        return "this is an HTML page renamed .svg, not an SVG"
    return _check_declared_encoding(text) or _parse(text)
