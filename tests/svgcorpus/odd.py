"""Odd but valid SVGs, made by code: what a browser does with each, and what ingest must do.

``svgs()`` returns name → SVG bytes; ``CASES`` holds, per name, the one-line note on what a
browser does (``browser``) and what ingest does with it:

- ``size``: the intrinsic size a browser gives it, in CSS px (96 per inch, 16 per em). Every
  rendition is ``width`` wide and ``round(width * height / width)`` high, at least 1.
- ``refused``: words the contributor's reason holds where ingest refuses the file instead of
  drawing it wrong; ``by`` says who refuses it: svgcheck (batcher, before upload) and render.py
  (processor) both, or render.py alone where the limit is the processor's setting.
- ``reference``: the same picture written so that resvg (the independent renderer the fidelity
  test compares with) reads it as a browser does, where it reads the original differently.
- ``warnings``: words each warning of the render holds, in order.
- ``text``: draws glyphs, compared on glyph pixels with the same font file (test_fidelity).

The artwork of the geometry cases (``_art``) touches every edge of its viewBox and marks two
corners, so a shrunk, shifted or squeezed rendition does not pass for the right one.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field
from typing import Literal

import pyvips

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
# librsvg refuses to draw <use> copies beyond this (its limits.rs); svgcheck counts the same.
USE_LIMIT = 500_000


@dataclass(frozen=True)
class Case:
    svg: bytes
    browser: str
    size: tuple[float, float] | None = None
    refused: str | None = None
    by: Literal["both", "render"] = "both"
    reference: bytes | None = None
    warnings: tuple[str, ...] = ()
    text: bool = False
    tags: frozenset[str] = field(default_factory=frozenset)


def _n(value: float) -> str:
    return f"{value:g}"


def _art(x: float, y: float, w: float, h: float) -> str:
    """A filled viewBox, a centred disc, a red top-left and a navy bottom-right square."""
    s = min(w, h) / 4
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="#2a9d8f"/>'
        f'<circle cx="{_n(x + w / 2)}" cy="{_n(y + h / 2)}" r="{_n(min(w, h) * 0.35)}"'
        ' fill="#e9c46a"/>'
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(s)}" height="{_n(s)}" fill="#e63946"/>'
        f'<rect x="{_n(x + w - s)}" y="{_n(y + h - s)}" width="{_n(s)}" height="{_n(s)}"'
        ' fill="#1d3557"/>'
    )


def _svg(attributes: str, body: str) -> bytes:
    return f"{SVG_OPEN} {attributes}>{body}</svg>".encode()


def _boxed(attributes: str, box: tuple[float, float, float, float]) -> bytes:
    """An SVG with ``attributes`` on its root and the artwork filling ``box`` (user units)."""
    return _svg(attributes, _art(*box))


@functools.cache
def _raster(fmt: str) -> bytes:
    """A 6×6 raster of one colour in ``fmt``."""
    pixel = pyvips.Image.black(6, 6, bands=3).new_from_image([230, 57, 70])
    return bytes(pixel.write_to_buffer(f".{fmt}"))


def _image_svg(fmt: str, *, with_image: bool = True) -> bytes:
    data = base64.b64encode(_raster(fmt)).decode()
    image = (
        f'<image id="photo" x="8" y="8" width="24" height="24" preserveAspectRatio="none"'
        f' href="data:image/{fmt};base64,{data}"/>'
    )
    body = '<rect width="40" height="40" rx="6" fill="#1d3557"/>' + (image if with_image else "")
    return _svg('viewBox="0 0 40 40"', body)


def _text_svg(family: str, *, size: str | None = "28") -> bytes:
    font_size = f' font-size="{size}"' if size else ""
    return _svg(
        'viewBox="0 0 384 48"',
        f'<text x="8" y="36" font-family="{family}"{font_size} fill="#222">Hamburgefonstiv 0123'
        "</text>",
    )


# The encodings cases: a CSS class with a non-ASCII name colours the disc, so text decoded in
# the wrong encoding draws it in the fallback colour instead.
_ENCODED_BODY = (
    "<title>Café crème, 2½ × ±</title>"
    "<style>.crème{fill:#e9c46a} circle{fill:#e63946}</style>"
    '<rect width="40" height="40" fill="#2a9d8f"/><circle class="crème" cx="20" cy="20" r="14"/>'
)
_ENCODED = f'{SVG_OPEN} viewBox="0 0 40 40">{_ENCODED_BODY}</svg>'
# resvg's CSS matches no non-ASCII class name: its reference says the same in ASCII.
_ENCODED_REFERENCE = _ENCODED.replace("crème", "creme").encode()


def _declared(encoding: str) -> str:
    return f'<?xml version="1.0" encoding="{encoding}"?>\n{_ENCODED}'


def _use_bomb(levels: int) -> bytes:
    """<use> of a group of ten <use> of a group of ten ...: 10**levels rects drawn."""
    defs = '<rect id="l0" width="1" height="1" fill="#e63946"/>'
    for level in range(1, levels + 1):
        uses = f'<use href="#l{level - 1}"/>' * 10
        defs += f'<g id="l{level}">{uses}</g>'
    return _svg('viewBox="0 0 10 10"', f'<defs>{defs}</defs><use href="#l{levels}"/>')


_PAR_ART = _art(0, 0, 20, 20)


def _par(value: str | None) -> bytes:
    par = f' preserveAspectRatio="{value}"' if value else ""
    return _svg(f'width="80" height="40" viewBox="0 0 20 20"{par}', _PAR_ART)


_GRADIENTS = (
    '<defs><linearGradient id="lin" x1="0" y1="0" x2="1" y2="1">'
    '<stop offset="0" stop-color="#264653"/><stop offset=".5" stop-color="#e9c46a"/>'
    '<stop offset="1" stop-color="#e76f51" stop-opacity=".4"/></linearGradient>'
    '<radialGradient id="rad" cx="30" cy="30" r="22" fx="22" fy="22" '
    'gradientUnits="userSpaceOnUse" spreadMethod="reflect">'
    '<stop offset="0" stop-color="#fff"/><stop offset="1" stop-color="#2a9d8f"/>'
    "</radialGradient></defs>"
    '<rect x="2" y="2" width="60" height="26" rx="4" fill="url(#lin)"/>'
    '<circle cx="30" cy="46" r="16" fill="url(#rad)"/>'
)
_MASK_CLIP = (
    '<defs><linearGradient id="fade"><stop offset="0" stop-color="#fff"/>'
    '<stop offset="1" stop-color="#000"/></linearGradient>'
    '<mask id="m"><rect width="64" height="64" fill="url(#fade)"/></mask>'
    '<clipPath id="c"><circle cx="32" cy="32" r="26"/></clipPath></defs>'
    '<g clip-path="url(#c)"><rect width="64" height="64" fill="#264653"/>'
    '<path d="M0 16h64v8H0zM0 40h64v8H0z" fill="#e9c46a"/></g>'
    '<rect x="8" y="8" width="48" height="48" fill="#e63946" mask="url(#m)" opacity=".8"/>'
)
_BLUR = (
    '<defs><filter id="b"><feGaussianBlur stdDeviation="3"/></filter></defs>'
    '<circle cx="32" cy="32" r="18" fill="#e76f51" filter="url(#b)"/>'
)
_DROP_SHADOW = (
    '<defs><filter id="s" x="-30%" y="-30%" width="160%" height="160%">'
    '<feGaussianBlur in="SourceAlpha" stdDeviation="2"/><feOffset dx="3" dy="4"/>'
    '<feComponentTransfer><feFuncA type="linear" slope=".5"/></feComponentTransfer>'
    '<feMerge><feMergeNode/><feMergeNode in="SourceGraphic"/></feMerge></filter></defs>'
    '<rect x="12" y="10" width="36" height="36" rx="6" fill="#2a9d8f" filter="url(#s)"/>'
)
_FE_DROP_SHADOW = (
    '<defs><filter id="d" x="-30%" y="-30%" width="160%" height="160%">'
    '<feDropShadow dx="3" dy="4" stdDeviation="2" flood-color="#000" flood-opacity=".5"/>'
    "</filter></defs>"
    '<rect x="12" y="10" width="36" height="36" rx="6" fill="#2a9d8f" filter="url(#d)"/>'
)
_USE_SYMBOL = (
    '<defs><symbol id="star" viewBox="0 0 10 10">'
    '<path d="M5 0l1.5 3.5L10 4 7.3 6.3 8 10 5 8 2 10l.7-3.7L0 4l3.5-.5z"/></symbol>'
    '<g id="pair"><circle cx="6" cy="6" r="5" fill="#2a9d8f"/>'
    '<rect x="12" y="1" width="10" height="10" fill="#e76f51"/></g></defs>'
    '<use href="#star" x="2" y="2" width="28" height="28" fill="#e9c46a"/>'
    '<use xlink:href="#star" x="34" y="6" width="20" height="20" fill="#e63946"/>'
    '<use href="#pair" x="4" y="40"/><use href="#pair" transform="translate(30 40) scale(1.2)"/>'
)
_CSS = (
    "<style>"
    ".tile{fill:#2a9d8f} #hero{fill:#e9c46a;stroke:#264653;stroke-width:3}"
    "g.row > rect{opacity:.6} rect:first-child{rx:4px} .tile.hot{fill:#e63946}"
    "[data-kind=ring]{fill:none;stroke:#1d3557;stroke-width:4}"
    "</style>"
    '<g class="row"><rect class="tile" x="2" y="2" width="18" height="18"/>'
    '<rect class="tile hot" x="23" y="2" width="18" height="18"/>'
    '<rect class="tile" x="44" y="2" width="18" height="18"/></g>'
    '<circle id="hero" cx="20" cy="42" r="14"/>'
    '<circle data-kind="ring" cx="46" cy="42" r="12"/>'
)


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {}

    def add(name: str, case: Case) -> None:
        assert name not in cases, name
        cases[name] = case

    # --- size: where the intrinsic size comes from ----------------------------------------
    add(
        "no-size-no-viewbox",
        Case(
            _svg("", '<rect x="10" y="10" width="50" height="30" fill="#e63946"/>'),
            "draws it unscaled, in user units, in a 300×150 box; nothing tells how to scale it",
            refused="no viewBox and no width and height",
        ),
    )
    add(
        "width-only-no-viewbox",
        Case(
            _svg('width="40"', '<rect width="40" height="20" fill="#e63946"/>'),
            "40 px wide, 150 px high (the default height), artwork unscaled",
            refused="no viewBox and not both a width and a height",
        ),
    )
    add(
        "percent-size-no-viewbox",
        Case(
            _svg('width="100%" height="100%"', '<rect width="40" height="20" fill="#e63946"/>'),
            "no intrinsic size or ratio: 300×150 in an <img>, artwork unscaled",
            refused="no viewBox and no width and height",
        ),
    )
    add(
        "width-height-only",
        Case(
            _boxed('width="40" height="20"', (0, 0, 40, 20)),
            "40×20; user units are CSS px, so the artwork scales with the image",
            size=(40, 20),
        ),
    )
    add(
        "viewbox-only",
        Case(
            _boxed('viewBox="0 0 40 20"', (0, 0, 40, 20)),
            "no intrinsic size, ratio 2:1 from the viewBox; the artwork fills the image",
            size=(40, 20),
        ),
    )
    add(
        "width-and-viewbox",
        Case(
            _boxed('width="48" viewBox="0 0 40 20"', (0, 0, 40, 20)),
            "48 wide; the height follows the viewBox's ratio: 24",
            size=(48, 24),
        ),
    )
    add(
        "height-and-viewbox",
        Case(
            _boxed('height="30" viewBox="0 0 40 20"', (0, 0, 40, 20)),
            "30 high; the width follows the viewBox's ratio: 60",
            size=(60, 30),
        ),
    )
    add(
        "percent-size-with-viewbox",
        Case(
            _boxed('width="100%" height="50%" viewBox="0 0 40 20"', (0, 0, 40, 20)),
            "percentages give no intrinsic size in an <img>: the ratio is the viewBox's, 2:1",
            size=(40, 20),
            # resvg takes 50% of the viewBox's height (40×10); written as a browser reads it:
            reference=_boxed('viewBox="0 0 40 20"', (0, 0, 40, 20)),
        ),
    )
    add(
        "css-size-on-root",
        Case(
            _boxed(
                'width="10" height="10" style="width:48px;height:24px" viewBox="0 0 40 20"',
                (0, 0, 40, 20),
            ),
            "CSS width and height beat the attributes: 48×24",
            size=(48, 24),
            reference=_boxed('width="48" height="24" viewBox="0 0 40 20"', (0, 0, 40, 20)),
        ),
    )
    add(
        "zero-width",
        Case(
            _boxed('width="0" height="20" viewBox="0 0 40 20"', (0, 0, 40, 20)),
            "a zero-sized image: nothing is drawn",
            refused="width or height",
        ),
    )
    add(
        "zero-viewbox",
        Case(
            _boxed('width="40" height="20" viewBox="0 0 0 20"', (0, 0, 40, 20)),
            "a viewBox of zero width disables rendering: nothing is drawn",
            refused="viewBox",
        ),
    )
    add(
        "malformed-viewbox",
        Case(
            _boxed('width="40" height="20" viewBox="0 0 40"', (0, 0, 40, 20)),
            "ignores the attribute and draws unscaled; almost surely a mistake",
            refused="not four numbers",
        ),
    )

    # --- units --------------------------------------------------------------------------
    box = (0, 0, 40, 20)
    for unit, (w, h), size in (
        ("px", ("40px", "20px"), (40, 20)),
        ("mm", ("10mm", "5mm"), (37.795, 18.898)),
        ("cm", ("1cm", "0.5cm"), (37.795, 18.898)),
        ("in", ("0.5in", "0.25in"), (48, 24)),
        ("pt", ("30pt", "15pt"), (40, 20)),
        ("pc", ("3pc", "1.5pc"), (48, 24)),
        ("em", ("2.5em", "1.25em"), (40, 20)),
        ("ex", ("5ex", "2.5ex"), (40, 20)),
    ):
        add(
            f"unit-{unit}",
            Case(
                _boxed(f'width="{w}" height="{h}" viewBox="0 0 40 20"', box),
                f"{w}×{h} at 96 px per inch and 16 px per em (1ex taken as half an em)",
                size=size,
            ),
        )
    add(
        "unit-mixed-in-px",
        Case(
            _boxed('width="0.5in" height="24" viewBox="0 0 40 20"', box),
            "0.5in is 48 px: 48×24, ratio 2:1 (at librsvg's 72 dpi it was 36×24)",
            size=(48, 24),
        ),
    )
    add(
        "unit-mixed-em-px",
        Case(
            _boxed('width="3em" height="24" viewBox="0 0 40 20"', box),
            "3em is 48 px at the default 16 px font size: 48×24 (librsvg's 12 px made 36×24)",
            size=(48, 24),
        ),
    )
    add(
        "units-inside",
        Case(
            _svg(
                'width="96" height="96"',
                '<rect x="0.1in" y="0.1in" width="0.5in" height="10mm" fill="#e63946"/>'
                '<rect x="12pt" y="60" width="3pc" height="2em" fill="#2a9d8f"/>',
            ),
            "lengths in the artwork at 96 px per inch and 16 px per em too",
            size=(96, 96),
        ),
    )

    # --- aspect ratios: the renditions are 64-512 wide, their heights follow -------------
    for name, view_box, size, note in (
        ("aspect-20-1", (0, 0, 200, 10), (200, 10), "a 20:1 strip, exactly the limit"),
        ("aspect-1-20", (0, 0, 10, 200), (10, 200), "a 1:20 column, exactly the limit"),
        ("aspect-19.7-1", (0, 0, 203, 10.3), (203, 10.3), "just inside the limit"),
        ("aspect-13-1-uneven", (0, 0, 200, 15.3), (200, 15.3), "heights round down and up"),
    ):
        add(
            name,
            Case(
                _boxed(f'viewBox="{" ".join(map(_n, view_box))}"', view_box),
                f"{note}: the artwork fills the full width, to the last column",
                size=size,
            ),
        )
    add(
        "aspect-20.5-1",
        Case(
            _boxed('viewBox="0 0 205 10"', (0, 0, 205, 10)),
            "a 20.5:1 strip: drawn, but its 64 px rendition would be 3 px high",
            refused="more elongated than the limit of 20:1",
            by="render",
        ),
    )
    add(
        "aspect-1-20.5",
        Case(
            _boxed('viewBox="0 0 10 205"', (0, 0, 10, 205)),
            "a 1:20.5 column: its 512 px rendition would be 10,496 px high",
            refused="more elongated than the limit of 20:1",
            by="render",
        ),
    )

    # --- tiny and huge -------------------------------------------------------------------
    add(
        "tiny-1px",
        Case(
            _boxed('width="1" height="1" viewBox="0 0 1 1"', (0, 0, 1, 1)),
            "a 1×1 image; scaled up, the vector stays sharp",
            size=(1, 1),
        ),
    )
    add(
        "tiny-viewbox",
        Case(
            _boxed('viewBox="0 0 0.5 0.25"', (0, 0, 0.5, 0.25)),
            "ratio 2:1 from a viewBox smaller than a pixel",
            size=(0.5, 0.25),
        ),
    )
    add(
        "huge-viewbox-1e5-sized",
        Case(
            _boxed('width="24" height="24" viewBox="0 0 100000 100000"', (0, 0, 1e5, 1e5)),
            "24×24: the viewBox only sets the coordinates",
            size=(24, 24),
        ),
    )
    add(
        "huge-viewbox-1e9-sized",
        Case(
            _boxed('width="24" height="12" viewBox="0 0 1e9 5e8"', (0, 0, 1e9, 5e8)),
            "24×12, coordinates in the billions",
            size=(24, 12),
        ),
    )
    add(
        "huge-viewbox-1e5-only",
        Case(
            _boxed('viewBox="0 0 100000 100000"', (0, 0, 1e5, 1e5)),
            "no intrinsic size, ratio 1:1; renderers take the viewBox's 100000×100000 as its size",
            refused="declares 100000×100000 pixels",
            by="render",
        ),
    )
    add(
        "huge-size-1e9",
        Case(
            _boxed('width="1e9" height="1e9" viewBox="0 0 10 10"', (0, 0, 10, 10)),
            "a billion pixels square: no browser allocates it",
            refused="declares 1000000000×1000000000 pixels",
            by="render",
        ),
    )
    add(
        "huge-viewbox-1e9-only",
        Case(
            _boxed('viewBox="0 0 1e9 1e9"', (0, 0, 1e9, 1e9)),
            "no intrinsic size; renderers take the viewBox's billion pixels square",
            refused="declares 1000000000×1000000000 pixels",
            by="render",
        ),
    )
    add(
        "viewbox-origin",
        Case(
            _boxed('width="40" height="30" viewBox="-25 10 40 30"', (-25, 10, 40, 30)),
            "the viewBox's top-left user point (-25, 10) is the image's top-left corner",
            size=(40, 30),
        ),
    )

    # --- preserveAspectRatio: an 80×40 image of a 20×20 viewBox ----------------------------
    for value, note in (
        (None, "default xMidYMid meet: a 40×40 square in the middle, transparent sides"),
        ("xMinYMin meet", "the square at the left"),
        ("xMaxYMax meet", "the square at the right"),
        ("xMidYMid slice", "scaled to 80×80, the middle 40 rows shown"),
        ("xMinYMax slice", "scaled to 80×80, the bottom 40 rows shown"),
        ("none", "stretched to 80×40"),
        ("defer xMaxYMid", "'defer' ignored outside <image>: xMaxYMid meet"),
    ):
        name = "par-" + (value or "default").replace(" ", "-")
        add(name, Case(_par(value), note, size=(80, 40)))

    # --- styling and painting --------------------------------------------------------------
    add(
        "css-style-element",
        Case(
            _svg('viewBox="0 0 64 64"', _CSS),
            "classes, ids, child and attribute selectors, compound classes, rx as a property",
            size=(64, 64),
            # resvg ignores rx as a CSS property (SVG 2); browsers and librsvg round the corners.
            reference=_svg(
                'viewBox="0 0 64 64"',
                _CSS.replace("rect:first-child{rx:4px}", "").replace(
                    '<rect class="tile" x="2"', '<rect class="tile" rx="4" x="2"'
                ),
            ),
        ),
    )
    add(
        "gradients",
        Case(
            _svg('viewBox="0 0 64 64"', _GRADIENTS),
            "a linear gradient in bounding-box units, a reflected radial one with a focal point",
            size=(64, 64),
        ),
    )
    add(
        "mask-and-clip",
        Case(
            _svg('viewBox="0 0 64 64"', _MASK_CLIP),
            "a luminance mask fading left to right, stripes clipped to a circle",
            size=(64, 64),
        ),
    )
    add(
        "filter-blur",
        Case(
            _svg('viewBox="0 0 64 64"', _BLUR),
            "a Gaussian blur, std. deviation 3 user units, inside the default filter region",
            size=(64, 64),
            tags=frozenset({"filter"}),
        ),
    )
    add(
        "filter-drop-shadow",
        Case(
            _svg('viewBox="0 0 64 64"', _DROP_SHADOW),
            "a drop shadow built from blur, offset, transfer and merge",
            size=(64, 64),
            tags=frozenset({"filter"}),
        ),
    )
    add(
        "filter-fedropshadow",
        Case(
            _svg('viewBox="0 0 64 64"', _FE_DROP_SHADOW),
            "a drop shadow with the feDropShadow shorthand",
            size=(64, 64),
            tags=frozenset({"filter"}),
        ),
    )
    add(
        "use-and-symbol",
        Case(
            _svg('viewBox="0 0 64 64"', _USE_SYMBOL),
            "a <symbol> with its own viewBox drawn at two sizes, a group reused and transformed",
            size=(64, 64),
        ),
    )
    add(
        "use-bomb",
        Case(
            _use_bomb(6),
            "a million copies through six levels of ten <use>: a browser tab stalls",
            refused=f"its <use> elements expand to more than {USE_LIMIT:,} elements",
        ),
    )

    # --- text -------------------------------------------------------------------------------
    for family in ("sans-serif", "serif", "monospace", "DejaVu Sans"):
        slug = family.lower().replace(" ", "-")
        add(
            f"text-{slug}",
            Case(
                _text_svg(family),
                f"glyphs of the system's {family} font at 28 px",
                size=(384, 48),
                text=True,
            ),
        )
    add(
        "text-default-size",
        Case(
            _text_svg("DejaVu Sans", size=None),
            "no font-size: CSS 'medium', 16 px (librsvg's own default is 12 px)",
            size=(384, 48),
            text=True,
        ),
    )

    # --- encodings: the disc is yellow only if the class name ``crème`` was read right ------
    add(
        "encoding-iso-8859-1",
        Case(
            _declared("ISO-8859-1").encode("latin-1"),
            "reads the declared Latin-1: the class crème matches, the disc is yellow",
            size=(40, 40),
            reference=_ENCODED_REFERENCE,
        ),
    )
    add(
        "encoding-utf-16le-bom",
        Case(
            b"\xff\xfe" + _declared("UTF-16").encode("utf-16-le"),
            "the byte-order mark says UTF-16 little-endian",
            size=(40, 40),
            reference=_ENCODED_REFERENCE,
        ),
    )
    add(
        "encoding-utf-16be-bom",
        Case(
            b"\xfe\xff" + _declared("UTF-16").encode("utf-16-be"),
            "the byte-order mark says UTF-16 big-endian",
            size=(40, 40),
            reference=_ENCODED_REFERENCE,
        ),
    )
    add(
        "encoding-utf-8-bom",
        Case(
            b"\xef\xbb\xbf" + _declared("UTF-8").encode(),
            "a UTF-8 byte-order mark is skipped",
            size=(40, 40),
            reference=_ENCODED_REFERENCE,
        ),
    )

    # --- embedded raster images ---------------------------------------------------------------
    add(
        "image-png",
        Case(
            _image_svg("png"),
            "draws the embedded PNG (svgcheck allows base64 PNG, JPEG, GIF and WebP data: URLs)",
            size=(40, 40),
        ),
    )
    add(
        "image-jpeg",
        Case(_image_svg("jpeg"), "draws the embedded JPEG", size=(40, 40)),
    )
    add(
        "image-gif",
        Case(
            _image_svg("gif"),
            "draws the embedded GIF; librsvg draws only PNG and JPEG: drawn without it, warned",
            size=(40, 40),
            reference=_image_svg("gif", with_image=False),
            warnings=("embedded image 'photo' was not drawn", "only PNG and JPEG"),
        ),
    )
    add(
        "image-webp",
        Case(
            _image_svg("webp"),
            "draws the embedded WebP; librsvg does not: drawn without it, warned",
            size=(40, 40),
            reference=_image_svg("webp", with_image=False),
            warnings=("embedded image 'photo' was not drawn", "only PNG and JPEG"),
        ),
    )
    return cases


CASES = _cases()


def svgs() -> dict[str, bytes]:
    """Every odd SVG by name."""
    return {name: case.svg for name, case in CASES.items()}
