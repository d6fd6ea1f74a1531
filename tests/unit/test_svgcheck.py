"""check_svg: the cheap sniff that a contributor's file is a plain, self-contained SVG."""

from __future__ import annotations

import pytest
from ingest_batcher import svgcheck
from ingest_batcher.svgcheck import MAX_DEPTH, MAX_USE_EXPANSION, check_svg

from tests.svgs import BOOTSTRAP_CARET_UP_FILL, MDI_ALPHA_M

LIMIT = 1 << 20
SVG_OPEN = (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'viewBox="0 0 24 24">'
)


def svg(body: str) -> bytes:
    return f"{SVG_OPEN}{body}</svg>".encode()


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize("data", [MDI_ALPHA_M, BOOTSTRAP_CARET_UP_FILL])
def test_real_icons_pass(data: bytes) -> None:
    assert check_svg(data, LIMIT) is None


@pytest.mark.parametrize(
    "body",
    [
        '<defs><linearGradient id="g"/></defs><rect fill="url(#g)"/>',
        "<style>.a{fill:url( '#g' )}</style>",
        '<use href="#a"/><use xlink:href="#b"/>',
        '<image href="data:image/png;base64,iVBORw0KGgo="/>',
        '<image xlink:href="DATA:image/webp;base64,UklGRg=="/>',
        '<a href=""><rect/></a>',
        "<text>caf\u00e9 \u2603</text>",
    ],
)
def test_self_contained_features_pass(body: str) -> None:
    assert check_svg(svg(body), LIMIT) is None


def test_xml_declaration_bom_and_utf16_pass() -> None:
    document = '<?xml version="1.0" encoding="UTF-8"?>' + svg("<text>\u00e9</text>").decode()
    assert check_svg(document.encode(), LIMIT) is None
    assert check_svg(b"\xef\xbb\xbf" + MDI_ALPHA_M, LIMIT) is None
    assert check_svg(MDI_ALPHA_M.decode().encode("utf-16"), LIMIT) is None  # with BOM
    assert check_svg(MDI_ALPHA_M.decode().encode("utf-16-le"), LIMIT) is None  # without


def test_nesting_up_to_the_limit_passes() -> None:
    depth = MAX_DEPTH - 1  # plus the root <svg>
    assert check_svg(svg("<g>" * depth + "</g>" * depth), LIMIT) is None


# --- not an SVG at all ------------------------------------------------------------------


def test_empty() -> None:
    assert check_svg(b"", LIMIT) == "the file is empty"
    assert check_svg(b" \n\t", LIMIT) == "the file is empty"


def test_too_big() -> None:
    reason = check_svg(MDI_ALPHA_M, 100)
    assert reason is not None
    assert "larger than the limit of 100 bytes" in reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "this is a PNG image renamed .svg"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "this is a JPEG image renamed .svg"),
        (b"GIF89a\x01\x00\x01\x00", "this is a GIF image renamed .svg"),
        (b"%PDF-1.7\n", "this is a PDF document renamed .svg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "this is a WebP image renamed .svg"),
        (b"\x1f\x8b\x08\x00", ".svgz"),
        (b"<!DOCTYPE html><html><body></body></html>", "this is an HTML page renamed .svg"),
        (b"  <html><svg/></html>", "this is an HTML page renamed .svg"),
    ],
)
def test_other_formats_are_named(data: bytes, words: str) -> None:
    reason = check_svg(data, LIMIT)
    assert reason is not None
    assert words in reason


def test_not_utf8_or_utf16() -> None:
    latin1 = svg("<text>\u00e9</text>").decode().encode("latin-1")
    assert check_svg(latin1, LIMIT) == "it is not text in UTF-8 or UTF-16; save it as UTF-8"


def test_dangerous_declared_encoding() -> None:
    # UTF-7 hides markup from a UTF-8 reader ("+ADw-" is "<").
    data = b'<?xml version="1.0" encoding="UTF-7"?>' + svg("+ADw-script+AD4-")
    reason = check_svg(data, LIMIT)
    assert reason is not None
    assert 'declares the text encoding "UTF-7"' in reason


@pytest.mark.parametrize(
    ("data", "position"),
    [
        (MDI_ALPHA_M[:-6], "line 1, column 156"),  # truncated upload: no </svg>
        (MDI_ALPHA_M[:60], "line 1, column 1"),  # cut inside a tag: expat points at its start
        (b"<svg xmlns='http://www.w3.org/2000/svg'>\n<g></svg>", "line 2, column 6"),
        (b"just some text", "line 1, column 1"),
    ],
)
def test_malformed_xml_names_the_position(data: bytes, position: str) -> None:
    reason = check_svg(data, LIMIT)
    assert reason is not None
    assert reason.startswith("it is not well-formed XML")
    assert position in reason


# --- entities and DTDs (billion laughs, XXE) --------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE svg [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&lol3;</text></svg>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>"""

PLAIN_DOCTYPE = b"""<?xml version="1.0"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"
  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg"/>"""


@pytest.mark.parametrize("data", [BILLION_LAUGHS, XXE, PLAIN_DOCTYPE])
def test_entities_and_doctype_are_refused(data: bytes) -> None:
    reason = check_svg(data, LIMIT)
    assert reason is not None
    assert "uses XML entities or a DOCTYPE, which are not allowed" in reason


def test_undefined_entity_is_malformed() -> None:
    reason = check_svg(svg("<text>&nbsp;</text>"), LIMIT)
    assert reason is not None
    assert "not well-formed XML" in reason


# --- the root element --------------------------------------------------------------------


def test_svg_without_namespace_is_refused() -> None:
    reason = check_svg(b'<svg viewBox="0 0 1 1"><path d="M0 0"/></svg>', LIMIT)
    assert reason is not None
    assert 'has no xmlns="http://www.w3.org/2000/svg"' in reason


def test_other_root_element() -> None:
    reason = check_svg(b'<?xml version="1.0"?><note><to>x</to></note>', LIMIT)
    assert reason == "this is not an SVG image: its top element is <note>, not <svg>"


# --- active content and external references ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<script>alert(1)</script>", "<script>"),
        ('<script xlink:href="#x"/>', "<script>"),
        ("<foreignObject><div/></foreignObject>", "<foreignObject>"),
        ('<rect onclick="steal()"/>', 'event-handler attribute "onclick"'),
        ('<set attributeName="xlink:href" to="javascript:alert(1)"/>', 'animates the "href"'),
        ('<animate attributeName="onload" to="x()"/>', 'animates the "onload"'),
    ],
)
def test_active_content_is_refused(body: str, words: str) -> None:
    reason = check_svg(svg(body), LIMIT)
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ('<image href="https://evil.example/x.png"/>', "https://evil.example/x.png"),
        ('<image xlink:href="file:///etc/passwd"/>', "file:///etc/passwd"),
        ('<use href="sprites.svg#icon"/>', "sprites.svg#icon"),
        ('<filter><feImage href="http://x/y.png"/></filter>', "http://x/y.png"),
        ('<a href="javascript:alert(1)"><rect/></a>', "javascript:alert(1)"),
        ('<image href="data:image/svg+xml;base64,PHN2Zy8+"/>', "data:image/svg+xml"),
        ('<rect style="fill: URL(http://x/p)"/>', "http://x/p"),
        ('<rect fill="url(other.svg#g)"/>', "other.svg#g"),
        ("<style>rect{fill:url('https://x/p')}</style>", "https://x/p"),
        ("<style><![CDATA[rect{background:url(/etc/passwd)}]]></style>", "/etc/passwd"),
    ],
)
def test_external_references_are_refused(body: str, target: str) -> None:
    reason = check_svg(svg(body), LIMIT)
    assert reason is not None
    assert "refers to an external file or web address" in reason
    assert target in reason


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("<style>rect{fill:u\\72l(https://x/p)}</style>", "backslash escapes"),
        ("<rect style=\"mask: image-set('https://x/p.png' 1x)\"/>", "image-set() or src()"),
        ("<rect fill=\"src('https://x/p.png')\"/>", "image-set() or src()"),
    ],
)
def test_css_tricks_are_refused(body: str, words: str) -> None:
    reason = check_svg(svg(body), LIMIT)
    assert reason is not None
    assert words in reason


def test_editor_metadata_may_hold_windows_paths() -> None:
    body = (
        '<g xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" '
        'inkscape:export-filename="C:\\Program Files (x86)\\a.png" transform="rotate(45)"/>'
    )
    assert check_svg(svg(body), LIMIT) is None


def test_css_import_is_refused() -> None:
    reason = check_svg(svg('<style>@import "https://x/a.css";</style>'), LIMIT)
    assert reason is not None
    assert "@import" in reason


def test_stylesheet_processing_instruction_is_refused() -> None:
    data = b'<?xml-stylesheet href="https://x/a.css"?>' + MDI_ALPHA_M
    reason = check_svg(data, LIMIT)
    assert reason is not None
    assert "external stylesheet" in reason


def test_deep_nesting_is_refused() -> None:
    depth = MAX_DEPTH + 50
    reason = check_svg(svg("<g>" * depth + "</g>" * depth), LIMIT)
    assert reason is not None
    assert f"nested more than {MAX_DEPTH} levels deep" in reason


def test_very_deep_nesting_is_cheap() -> None:
    # 100 000 levels: refused at level 257 without building a tree or recursing.
    depth = 100_000
    reason = check_svg(svg("<g>" * depth + "</g>" * depth), 10 * LIMIT)
    assert reason is not None
    assert "nested more than" in reason


# --- declared encodings -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "latin1", "US-ASCII"])
def test_declared_single_byte_encodings_are_read(encoding: str) -> None:
    text = "caf\u00e9" if encoding != "US-ASCII" else "cafe"
    document = f'<?xml version="1.0" encoding="{encoding}"?>' + svg(f"<text>{text}</text>").decode()
    assert check_svg(document.encode("latin-1"), LIMIT) is None


def test_bytes_outside_the_declared_encoding() -> None:
    document = '<?xml version="1.0" encoding="US-ASCII"?>' + svg("<text>\u00e9</text>").decode()
    reason = check_svg(document.encode("latin-1"), LIMIT)
    assert reason == 'it is not text in "US-ASCII", the encoding it declares; save it as UTF-8'


def test_undeclared_single_byte_encoding_is_refused_naming_the_encoding() -> None:
    data = b'<?xml version="1.0" encoding="windows-1252"?>' + svg("<text>\x80</text>")
    assert (
        check_svg(data, LIMIT) == 'it declares the text encoding "windows-1252"; save it as UTF-8'
    )


# --- size: something to scale the artwork from ----------------------------------------------

NS = 'xmlns="http://www.w3.org/2000/svg"'


@pytest.mark.parametrize(
    "attributes",
    [
        'viewBox="0 0 24 24"',
        'width="24" height="24"',
        'width="2.5em" height="10mm"',
        'width="100%" viewBox="0,0,24,24"',
        'style="width: 24px; height: 24px"',
        'width="10" viewBox="0 0 24 24"',
    ],
)
def test_a_size_or_a_viewbox_is_enough(attributes: str) -> None:
    assert check_svg(f"<svg {NS} {attributes}><rect/></svg>".encode(), LIMIT) is None


@pytest.mark.parametrize(
    ("attributes", "words"),
    [
        ("", "it has no viewBox and no width and height, so its artwork has no size"),
        ('width="24"', "it has no viewBox and not both a width and a height"),
        ('width="100%" height="100%"', "it has no viewBox and no width and height"),
        ('width="24" height="auto"', "not both a width and a height"),
        ('viewBox="0 0 24"', 'its viewBox ("0 0 24") is not four numbers'),
        ('viewBox="0 0 24 0"', "its viewBox has a zero or negative width or height"),
        ('viewBox="0 0 1e999 24"', "has numbers too large to draw"),
        ('width="0" height="24" viewBox="0 0 24 24"', "its width or height is 0"),
    ],
)
def test_no_size_to_scale_from_is_refused(attributes: str, words: str) -> None:
    reason = check_svg(f"<svg {NS} {attributes}><rect/></svg>".encode(), LIMIT)
    assert reason is not None
    assert words in reason


def test_no_size_reason_says_what_to_add() -> None:
    reason = check_svg(f"<svg {NS}><rect/></svg>".encode(), LIMIT)
    assert reason is not None
    assert reason.endswith('add a viewBox such as viewBox="0 0 24 24" that frames the artwork')


# --- <use> bombs and element counts -----------------------------------------------------------


def nested_uses(levels: int, fan_out: int = 10, element: str = "use") -> bytes:
    defs = '<rect id="l0" width="1" height="1"/>'
    for level in range(1, levels + 1):
        copies = f'<{element} href="#l{level - 1}"/>' * fan_out
        defs += f'<g id="l{level}">{copies}</g>'
    return svg(f'<defs>{defs}</defs><use xlink:href="#l{levels}"/>')


def test_use_bomb_is_refused() -> None:
    reason = check_svg(nested_uses(6), LIMIT)  # a million rects
    assert reason is not None
    assert reason.startswith(
        f"its <use> elements expand to more than {MAX_USE_EXPANSION:,} elements (copies of"
    )


def test_fe_image_copies_count_like_uses() -> None:
    assert check_svg(nested_uses(6, element="feImage"), LIMIT) is not None


def test_ordinary_reuse_passes() -> None:
    assert check_svg(nested_uses(4), LIMIT) is None  # 10,000 rects: a patterned background


def test_a_use_that_refers_to_its_own_ancestor_is_not_a_bomb() -> None:
    # Renderers and browsers skip the circular copy and draw the rest.
    loop = svg('<g id="a"><rect width="5" height="5"/><use href="#a"/></g><use href="#b"/>')
    assert check_svg(loop, LIMIT) is None


def test_repeated_ids_count_the_first() -> None:
    repeated = svg('<rect id="a"/><g id="a"><use href="#a"/></g><use href="#a"/>')
    assert check_svg(repeated, LIMIT) is None


def test_more_elements_than_the_renderer_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(svgcheck, "MAX_ELEMENTS", 100)
    reason = check_svg(svg("<g/>" * 100), LIMIT)
    assert reason == "it has more than 100 elements, more than the renderer loads; simplify it"
