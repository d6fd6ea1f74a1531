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
- absurd nesting (renderers recurse), more elements than the renderer loads, and `<use>`
  elements that expand to more elements than it draws (a "use bomb": uses of groups of uses);
- SVGs whose artwork has no size to scale from: no viewBox and not both a width and a height
  (a browser draws them unscaled in a 300×150 box), and viewBoxes or sizes that draw nothing.

The processor refuses the same files with the same words (ingest_processor.render); the caps
on the declared size are its settings, so it checks those alone, before rendering.
Every returned reason is a sentence for a contributor.
"""

from __future__ import annotations

import math
import re
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
MAX_DEPTH = 256
# librsvg's own limits (its limits.rs): it refuses documents with more elements than this, and
# stops drawing when <use> copies reach the other.
MAX_ELEMENTS = 1_000_000
MAX_USE_EXPANSION = 500_000

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
# Encodings a renderer or browser reads exactly as we decode them (to Python's codec). Anything
# else (UTF-7, EBCDIC, ...) could make a renderer or browser see markup we did not check.
_CODECS = {
    "utf-8": "utf-8", "utf8": "utf-8", "utf-16": "utf-16", "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be", "us-ascii": "ascii", "ascii": "ascii", "iso-8859-1": "latin-1",
    "iso_8859-1": "latin-1", "latin-1": "latin-1", "latin1": "latin-1",
}  # fmt: skip
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
# Elements that draw a copy of the element their href names.
_COPYING_ELEMENTS = {"use", "feimage"}
_USE_BOMB = (
    f"its <use> elements expand to more than {MAX_USE_EXPANSION:,} elements (copies of copies "
    'of groups, a "use bomb"); draw the repeated artwork with fewer levels of <use>'
)

# The root's size, read as render.py's _geometry reads it (CSS lengths; style beats attributes).
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_LENGTH = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]+|%)?\s*\Z")
_LENGTH_UNITS = {"", "px", "in", "cm", "mm", "q", "pt", "pc", "em", "ex"}
_SEPARATOR = r"(?:\s*,\s*|\s+)"
_VIEW_BOX = re.compile(rf"\s*{_SEPARATOR.join([f'({_NUMBER})'] * 4)}\s*\Z")
_STYLE_SIZE = re.compile(
    r"(?:^|;)\s*(width|height)\s*:\s*([^;!]*?)\s*(?:!\s*important\s*)?(?=;|$)", re.IGNORECASE
)


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


class _UseExpansion:
    """How many elements drawing the file makes, <use> copies included, counted without a tree.

    Every element belongs to a node: its nearest ancestor-or-self with an id, or the root (node
    0). A node costs its own elements plus, for each reference, the referenced node's cost: a
    nested node is referenced once by its parent's node, and <use href="#x"> references x's.
    """

    def __init__(self) -> None:
        self.own = [0]
        self.children: list[list[int]] = [[]]
        self.uses: list[dict[str, int]] = [{}]
        self.ids: dict[str, int] = {}
        self.open: list[int] = []  # the node of each open element

    def start(self, local: str, attrib: dict[str, str]) -> None:
        identifier = attrib.get("id") or attrib.get(_XML_ID)
        if not self.open:
            node = 0
        elif identifier:
            node = len(self.own)
            self.own.append(0)
            self.children.append([])
            self.uses.append({})
            self.children[self.open[-1]].append(node)
        else:
            node = self.open[-1]
        if identifier:
            self.ids.setdefault(identifier, node)  # a repeated id: the first one counts
        self.own[node] += 1
        href = attrib.get("href", attrib.get(_XLINK_HREF, "")).strip()
        if local in _COPYING_ELEMENTS and href.startswith("#"):
            uses = self.uses[node]
            uses[href[1:]] = uses.get(href[1:], 0) + 1
        self.open.append(node)

    def end(self) -> None:
        self.open.pop()

    def total(self) -> int:
        """The root's cost, capped just above MAX_USE_EXPANSION. A <use> that refers back to
        an element it is inside counts nothing: renderers and browsers skip such loops."""
        cap = MAX_USE_EXPANSION + 1
        cost: dict[int, int] = {}
        visiting: set[int] = set()
        stack = [0]
        while stack:  # depth-first, children before parents, without recursion
            node = stack[-1]
            targets = [(child, 1) for child in self.children[node]] + [
                (self.ids[name], count)
                for name, count in self.uses[node].items()
                if name in self.ids
            ]
            pending = [t for t, _ in targets if t not in cost and t not in visiting]
            if node not in visiting and pending:
                visiting.add(node)
                stack.extend(pending)
                continue
            stack.pop()
            visiting.discard(node)
            if node not in cost:
                total = self.own[node] + sum(count * cost.get(t, 0) for t, count in targets)
                cost[node] = min(total, cap)
        return cost[0]


class _SvgTarget:
    """Parser target: sees each element as it starts; keeps depth, counts and <style> text."""

    def __init__(self) -> None:
        self.depth = 0
        self.elements = 0
        self.root_seen = False
        self.root_attrib: dict[str, str] = {}
        self.style_text: list[str] | None = None
        self.expansion = _UseExpansion()

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Rejected(f"its elements are nested more than {MAX_DEPTH} levels deep")
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise _Rejected(
                f"it has more than {MAX_ELEMENTS:,} elements, more than the renderer loads; "
                "simplify it"
            )
        if not self.root_seen:
            self.root_seen = True
            _check_root(tag)
            self.root_attrib = dict(attrib)
        local = _local(tag)
        if local in _FORBIDDEN_ELEMENTS:
            raise _Rejected(_FORBIDDEN_ELEMENTS[local])
        _check_attributes(local, attrib)
        self.expansion.start(local, attrib)
        if local == "style":
            self.style_text = []

    def end(self, tag: str) -> None:
        self.depth -= 1
        self.expansion.end()
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
        # Called once the whole file parsed: a malformed file is told that first.
        if not self.root_seen:
            return
        _check_size(self.root_attrib)
        if self.expansion.total() > MAX_USE_EXPANSION:
            raise _Rejected(_USE_BOMB)


def _check_root(tag: str) -> None:
    if tag == f"{{{SVG_NAMESPACE}}}svg":
        return
    if tag == "svg":
        raise _Rejected(
            f'the <svg> element has no xmlns="{SVG_NAMESPACE}" attribute; add it '
            "(without it the file is not recognised as SVG)"
        )
    raise _Rejected(f"this is not an SVG image: its top element is <{_local(tag)}>, not <svg>")


def _size(text: str | None) -> float | None:
    """A width or height as a number (its unit does not matter here); None for auto,
    percentages and what a browser ignores (negative, not a length)."""
    match = _LENGTH.match(text or "")
    if match is None or (match[2] or "").lower() not in _LENGTH_UNITS:
        return None
    value = float(match[1])
    return value if value >= 0 else None


def _check_size(attrib: dict[str, str]) -> None:
    """The root has a size to scale its artwork from (the processor's _geometry agrees)."""
    style = {m[1].lower(): m[2] for m in _STYLE_SIZE.finditer(attrib.get("style", ""))}
    width = _size(style.get("width", attrib.get("width")))
    height = _size(style.get("height", attrib.get("height")))
    if width == 0 or height == 0:
        raise _Rejected("its width or height is 0, so nothing of it is drawn")
    view_box = attrib.get("viewBox")
    if view_box is not None:
        match = _VIEW_BOX.match(view_box)
        if match is None:
            raise _Rejected(
                f'its viewBox ("{_shorten(view_box, 40)}") is not four numbers: min-x, min-y, '
                "width, height"
            )
        if not all(math.isfinite(float(number)) for number in match.groups()):
            raise _Rejected(
                f'its viewBox ("{_shorten(view_box, 40)}") has numbers too large to draw'
            )
        if float(match[3]) <= 0 or float(match[4]) <= 0:
            raise _Rejected(
                "its viewBox has a zero or negative width or height, so nothing of it is drawn"
            )
        return
    if width is None or height is None:
        neither = width is None and height is None
        what = "no width and height" if neither else "not both a width and a height"
        raise _Rejected(
            f"it has no viewBox and {what}, so its artwork has no size to scale from (a browser "
            'draws it unscaled in a 300×150 box); add a viewBox such as viewBox="0 0 24 24" '
            "that frames the artwork"
        )


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


def _decode(data: bytes) -> str:
    """The file's text: UTF-16 by BOM or XML's own autodetection, else in the encoding its XML
    declaration names (UTF-8 if none). Raises _Rejected with the reason it cannot be read."""
    if data.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif data.startswith(b"<\x00"):
        encoding = "utf-16-le"
    elif data.startswith(b"\x00<"):
        encoding = "utf-16-be"
    else:
        # The declaration is ASCII in every encoding that gets this far.
        declared = _XML_DECLARED_ENCODING.match(data[:200].decode("latin-1"))
        encoding = _CODECS.get(declared.group(1).strip().lower(), "") if declared else "utf-8"
        if declared and not encoding:
            raise _Rejected(
                f'it declares the text encoding "{declared.group(1)}"; save it as UTF-8'
            )
        if declared and encoding != "utf-8":
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise _Rejected(
                    f'it is not text in "{declared.group(1)}", the encoding it declares; save it '
                    "as UTF-8"
                ) from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        raise _Rejected("it is not text in UTF-8 or UTF-16; save it as UTF-8") from None


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:200].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body"))


def _check_declared_encoding(text: str) -> str | None:
    match = _XML_DECLARED_ENCODING.match(text)
    if match and match.group(1).strip().lower() not in _CODECS:
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
    try:
        text = _decode(data)
    except _Rejected as exc:
        return exc.reason
    if _looks_like_html(text):
        return "this is an HTML page renamed .svg, not an SVG"
    return _check_declared_encoding(text) or _parse(text)
