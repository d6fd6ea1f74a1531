"""render_svg against real libvips and real SVGs.

The pytest process never calls configure_vips: it blocks every non-SVG loader process-wide and
the tests must decode the renditions back. Its effect is checked in a subprocess instead.

Real samples, copied inline from the project's corpus so CI does not need /work/shared
(MDI_FORWARD and FLUENT_RED_CIRCLE are in tests/svgs.py with the other tests' icons):
- OPENMOJI_JAPAN: OpenMoji 1F1EF-1F1F5 (openmoji 17.0.0), CC BY-SA 4.0, https://openmoji.org.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import pyvips
from ingest_processor.render import (
    RenderRejected,
    RenderResult,
    RenderSpec,
    render_svg,
)

from tests.svgs import FLUENT_RED_CIRCLE, MDI_FORWARD

OPENMOJI_JAPAN = (
    b'<svg id="emoji" viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg">\n  <g id="color">'
    b'\n    <rect x="5" y="17" width="62" height="38" fill="#fff"/>\n    <circle cx="36" cy="36"'
    b' r="9" fill="#d22f27"/>\n  </g>\n  <g id="line">\n    <rect x="5" y="17" width="62" height='
    b'"38" fill="none" stroke="#000" stroke-linecap="round" stroke-linejoin="round" stroke-wid'
    b'th="2"/>\n  </g>\n</svg>'
)


SPEC = RenderSpec()


def _svg(width: str, height: str, view_box: str = "0 0 10 10") -> bytes:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="{view_box}"><circle cx="5" cy="5" r="4" fill="#3a7"/></svg>'
    ).encode()


def _png() -> bytes:
    return bytes(pyvips.Image.black(16, 16, bands=4).pngsave_buffer())


def _decode(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "")


@pytest.mark.parametrize("svg", [MDI_FORWARD, OPENMOJI_JAPAN, FLUENT_RED_CIRCLE])
def test_every_width_and_format_decodes_back_with_alpha(svg: bytes) -> None:
    result = render_svg(svg, SPEC)

    expected = [(w, f) for w in SPEC.widths for f in SPEC.formats]
    assert [(r.width, r.format) for r in result.renditions] == expected
    for rendition in result.renditions:
        image = _decode(rendition.data)
        assert image.get("vips-loader") == f"{rendition.format}load_buffer"
        assert (image.width, image.height) == (rendition.width, rendition.height)
        assert image.hasalpha()
        assert image.interpretation == "srgb"
        assert rendition.content_type == f"image/{rendition.format}"


def test_source_size_is_the_declared_size() -> None:
    result = render_svg(FLUENT_RED_CIRCLE, SPEC)

    assert (result.source_width, result.source_height) == (32, 32)


def test_alpha_is_kept_outside_the_shape() -> None:
    png = next(r for r in render_svg(FLUENT_RED_CIRCLE, SPEC).renditions if r.format == "png")
    image = _decode(png.data)

    corner, centre = image(0, 0), image(image.width // 2, image.height // 2)
    assert corner[3] == 0
    assert centre[3] == 255
    assert centre[0] > 150 > centre[2]  # red, from the gradients


def test_vector_is_rendered_at_target_size_not_upscaled() -> None:
    # A 10×10 declared circle at 512 px: an upscaled bitmap would have a blurred rim many
    # pixels wide; a vector render has a one- or two-pixel antialiased edge.
    spec = RenderSpec(widths=(512,), formats=("png",))
    image = _decode(render_svg(_svg("10", "10"), spec).renditions[0].data)

    row = [image(x, 256)[3] for x in range(image.width)]
    partial = [a for a in row if 0 < a < 255]
    assert len(partial) <= 4


@pytest.mark.parametrize(
    ("declared", "width", "height"),
    [(("30", "17"), 64, 36), (("30", "17"), 7, 4), (("17", "300"), 33, 582), (("20", "1"), 1, 1)],
)
def test_height_follows_aspect_ratio(declared: tuple[str, str], width: int, height: int) -> None:
    w, h = declared
    spec = RenderSpec(widths=(width,), formats=("png",))
    result = render_svg(_svg(w, h, f"0 0 {w} {h}"), spec)

    assert [(r.width, r.height) for r in result.renditions] == [(width, height)]


def test_png_renamed_svg_is_rejected() -> None:
    with pytest.raises(RenderRejected) as caught:
        render_svg(_png(), SPEC)

    assert caught.value.reason == "is not an SVG image (libvips saw png)"


@pytest.mark.parametrize("junk", [b"", b"hello", b"<svg", b"<html><body/></html>"])
def test_non_svg_is_rejected_with_a_reason(junk: bytes) -> None:
    with pytest.raises(RenderRejected) as caught:
        render_svg(junk, SPEC)

    assert caught.value.reason.startswith("could not be rendered: ")
    assert "\n" not in caught.value.reason


def test_gzip_svgz_is_rejected() -> None:
    import gzip

    with pytest.raises(RenderRejected, match="gzip"):
        render_svg(gzip.compress(MDI_FORWARD), SPEC)


def test_huge_declared_size_is_rejected_before_rendering() -> None:
    started = time.perf_counter()
    with pytest.raises(RenderRejected) as caught:
        render_svg(_svg("100000", "100000"), SPEC)

    assert time.perf_counter() - started < 1.0
    assert "100000×100000" in caught.value.reason


def test_declared_pixels_over_cap_are_rejected() -> None:
    spec = RenderSpec(max_declared_pixels=10_000, max_side=1000)
    with pytest.raises(RenderRejected) as caught:
        render_svg(_svg("200", "200"), spec)

    assert caught.value.reason == "declares 200×200 pixels, more than the limit of 10,000"


def test_extreme_aspect_ratio_is_rejected() -> None:
    # 1×20000 is only 20,000 declared pixels, but its 512-wide rendition would be 10 M rows.
    with pytest.raises(RenderRejected, match="elongated"):
        render_svg(_svg("1", "20000", "0 0 1 20000"), SPEC)


def test_oversized_input_is_rejected() -> None:
    spec = RenderSpec(max_input_bytes=100)
    with pytest.raises(RenderRejected, match="more than the limit of 100"):
        render_svg(FLUENT_RED_CIRCLE, spec)


def test_giant_viewbox_with_small_size_renders() -> None:
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" '
        b'viewBox="0 0 1000000 1000000"><rect width="1000000" height="500000" fill="#00f"/></svg>'
    )
    result = render_svg(svg, SPEC)

    assert (result.source_width, result.source_height) == (24, 24)
    top = _decode(result.renditions[-2].data)  # 512 px PNG
    assert top.width == 512
    assert top(256, 100)[2] == 255
    assert top(256, 400)[3] == 0


def test_billion_laughs_is_rejected() -> None:
    entities = "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)
    )
    svg = (
        f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa">{entities}]>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&j;</text></svg>'
    ).encode()
    with pytest.raises(RenderRejected):
        render_svg(svg, SPEC)


def test_encoder_settings_are_applied() -> None:
    lossy = RenderSpec(widths=(64,), webp_mode="lossy")
    tuned = RenderSpec(widths=(64,), webp_mode="lossless", png_palette=True)

    png, webp = render_svg(OPENMOJI_JAPAN, lossy).renditions
    png_palette, webp_lossless = render_svg(OPENMOJI_JAPAN, tuned).renditions

    # Byte 25 of a PNG is the IHDR colour type: 6 is RGBA, 3 is indexed (palette).
    assert (png.data[25], png_palette.data[25]) == (6, 3)
    # A lossless WebP carries a VP8L chunk, a lossy one VP8 (+ ALPH).
    assert b"VP8L" in webp_lossless.data[:64]
    assert b"VP8L" not in webp.data[:64]


@pytest.mark.parametrize(("svg", "lossless"), [(MDI_FORWARD, True), (FLUENT_RED_CIRCLE, False)])
def test_auto_webp_mode_is_chosen_per_image_for_every_width(svg: bytes, lossless: bool) -> None:
    # A flat icon is smaller lossless; five layered gradients are several times smaller lossy.
    spec = RenderSpec(widths=(512, 64, 128), formats=("webp",))
    renditions = render_svg(svg, spec).renditions

    assert [r.width for r in renditions] == [512, 64, 128]  # the spec's order, not render order
    assert [b"VP8L" in r.data[:64] for r in renditions] == [lossless] * 3
    # ... and each says so (stored in images.renditions, where the previewer reads it).
    assert [r.lossless for r in renditions] == [lossless] * 3


def test_only_webp_renditions_say_whether_they_are_lossless() -> None:
    renditions = render_svg(MDI_FORWARD, RenderSpec(widths=(64,))).renditions

    assert {r.format: r.lossless for r in renditions} == {"png": None, "webp": True}


@pytest.mark.parametrize("svg", [MDI_FORWARD, FLUENT_RED_CIRCLE])
@pytest.mark.parametrize(
    "only",
    [{(256, "webp")}, {(64, "png")}, {(32, "png"), (512, "webp")}, {(128, "png"), (128, "webp")}],
)
def test_only_some_renditions_are_the_full_renders_bytes(
    svg: bytes, only: set[tuple[int, str]]
) -> None:
    spec = RenderSpec(widths=(512, 32, 64, 128, 256))
    full = {(r.width, r.format): r.data for r in render_svg(svg, spec).renditions}

    renditions = render_svg(svg, spec, only).renditions

    assert {(r.width, r.format) for r in renditions} == only
    assert all(r.data == full[r.width, r.format] for r in renditions)
    assert [r.width for r in renditions] == sorted(
        (r.width for r in renditions), key=spec.widths.index
    )


def test_a_lone_large_webp_keeps_the_mode_its_smallest_width_chose() -> None:
    # Five gradients: lossless is 2.6x the lossy bytes at 32 px but 12x at 512 px. With a slack
    # of 3 the smallest width picks lossless for every width; 512 px alone would pick lossy.
    spec = RenderSpec(widths=(32, 512), formats=("webp",), webp_auto_slack=3.0)
    full = render_svg(FLUENT_RED_CIRCLE, spec).renditions[1]

    (alone,) = render_svg(FLUENT_RED_CIRCLE, spec, {(512, "webp")}).renditions

    assert b"VP8L" in full.data[:64]
    assert alone.data == full.data


def test_only_renditions_of_the_spec_can_be_asked_for() -> None:
    with pytest.raises(ValueError, match=r"not renditions of this spec: \[\(48, 'png'\)\]"):
        render_svg(MDI_FORWARD, RenderSpec(widths=(64,)), {(48, "png"), (64, "png")})


def test_unknown_webp_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="webp_mode"):
        RenderSpec(webp_mode="lossyish")


def test_result_is_picklable_for_the_process_pool() -> None:
    import pickle

    result = render_svg(_image_svg("data:image/gif;base64,R0lGODlh"), RenderSpec(widths=(64,)))
    assert result.warnings
    error = RenderRejected("is not an SVG image (libvips saw png)")

    assert pickle.loads(pickle.dumps(result)) == result
    assert isinstance(pickle.loads(pickle.dumps(result)), RenderResult)
    assert pickle.loads(pickle.dumps(error)).reason == error.reason


def test_invalid_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="formats"):
        RenderSpec(formats=("gif",))
    with pytest.raises(ValueError, match="widths"):
        RenderSpec(widths=(0,))


def test_configure_vips_blocks_every_loader_but_svg() -> None:
    # In a subprocess: the block is process-wide and this process must keep decoding PNGs.
    code = textwrap.dedent(
        """
        import pyvips
        from ingest_processor.render import configure_vips
        png = pyvips.Image.black(8, 8).pngsave_buffer()
        svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
        configure_vips()
        assert pyvips.Image.thumbnail_buffer(svg, 16).width == 16
        try:
            pyvips.Image.thumbnail_buffer(png, 16)
        except pyvips.Error:
            print("blocked")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "blocked"


# --- geometry: drawn as a browser draws <img width=W> ---------------------------------------


def _alpha_row(data: bytes, y: int) -> list[float]:
    image = _decode(data)
    return [image(x, y)[3] for x in range(image.width)]


def test_thin_strip_keeps_its_edge_columns() -> None:
    # 20:1: 3.2 rows at 64 px. librsvg fits the artwork into the whole-pixel viewport libvips
    # gives it, so a height rounded down used to shrink the strip (8 of 128 columns lost).
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 10">'
        b'<rect width="200" height="10" fill="#3a7"/></svg>'
    )

    for rendition in render_svg(svg, RenderSpec(formats=("png",))).renditions:
        assert rendition.height == round(rendition.width / 20)
        assert min(_alpha_row(rendition.data, 0)) == 255, rendition.width


def test_height_follows_the_exact_ratio_not_the_rounded_size() -> None:
    # 0.5×0.25 rounds to 1×1 (or 0×0); the ratio is still 2:1.
    svg = _svg("0.5", "0.25", "0 0 0.5 0.25")

    result = render_svg(svg, RenderSpec(widths=(64,), formats=("png",)))

    assert [(r.width, r.height) for r in result.renditions] == [(64, 32)]
    assert (result.source_width, result.source_height) == (1, 1)


def test_no_viewbox_and_no_size_is_refused_with_what_to_add() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><rect x="10" y="10" width="50" height="30"/></svg>'

    with pytest.raises(RenderRejected) as caught:
        render_svg(svg, SPEC)

    assert "no viewBox" in caught.value.reason
    assert 'add a viewBox such as viewBox="0 0 24 24"' in caught.value.reason


def test_size_limit_names_a_size_libvips_cannot_hold() -> None:
    # librsvg's header of a 1e9×1e9 SVG overflows to 1×1 ("zero-sized image").
    with pytest.raises(RenderRejected) as caught:
        render_svg(_svg("1e9", "1e9"), SPEC)

    assert caught.value.reason.startswith("declares 1000000000×1000000000 pixels, a side longer")


def test_size_limit_of_a_viewbox_only_svg_says_where_the_size_comes_from() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 30000 300"/>'

    with pytest.raises(RenderRejected) as caught:
        render_svg(svg, SPEC)

    assert "30000×300 pixels" in caught.value.reason
    assert "as it has no width and height: add them" in caught.value.reason


@pytest.mark.parametrize(
    ("prefix", "root"),
    [
        ("<!-- an <svg width='9'> in a comment -->\n", '<svg {ns} width="10" height="10">'),
        (
            '<?xml version="1.0"?>\n',
            '<svg data-note="a > b" {ns} aria-label=\'say "hi"\' width="10"\n height="10" >',
        ),
        ("", '<s:svg xmlns:s="http://www.w3.org/2000/svg" width="10" height="10">'),
        ("", '<svg {ns} width="10" height="10" style="fill: #00f">'),
    ],
)
def test_root_tag_is_rewritten_wherever_and_however_it_is_written(prefix: str, root: str) -> None:
    ns = 'xmlns="http://www.w3.org/2000/svg"'
    tag = root.format(ns=ns).split()[0][1:]  # svg or s:svg
    circle = "<s:circle" if tag == "s:svg" else "<circle"
    svg = f'{prefix}{root.format(ns=ns)}{circle} cx="5" cy="5" r="4"/></{tag}>'.encode()

    (rendition,) = render_svg(svg, RenderSpec(widths=(64,), formats=("png",))).renditions

    image = _decode(rendition.data)
    assert (image.width, image.height) == (64, 64)
    centre = image(32, 32)
    assert centre[3] == 255
    assert centre[2] == (255 if "fill: #00f" in root else 0)  # the root's own style is kept


def test_text_without_font_size_is_16_px_as_in_a_browser() -> None:
    def cap_height(svg: bytes) -> int:
        (rendition,) = render_svg(svg, RenderSpec(widths=(200,), formats=("png",))).renditions
        image = _decode(rendition.data)
        rows = [y for y in range(image.height) if image.crop(0, y, image.width, 1)[3].max() > 128]
        return rows[-1] - rows[0] + 1

    text = '<text x="0" y="80" font-family="DejaVu Sans"{}>H</text>'
    default = _svg("200", "100", "0 0 200 100").replace(
        b'<circle cx="5" cy="5" r="4" fill="#3a7"/>', text.format("").encode()
    )
    sized = default.replace(
        b'font-family="DejaVu Sans"', b'font-family="DejaVu Sans" font-size="16"'
    )

    assert cap_height(default) == cap_height(sized) > 10  # DejaVu's H is 0.73 em: 12 px


def test_physical_units_in_the_artwork_are_96_per_inch() -> None:
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="192" height="96">'
        b'<rect width="1in" height="1in" fill="#000"/></svg>'
    )

    (rendition,) = render_svg(svg, RenderSpec(widths=(192,), formats=("png",))).renditions

    assert sum(a == 255 for a in _alpha_row(rendition.data, 10)) == 96


# --- reasons and warnings ----------------------------------------------------------------------


def _image_svg(href: str, identifier: str | None = None) -> bytes:
    attribute = f' id="{identifier}"' if identifier else ""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
        f'<image{attribute} width="10" height="10" href="{href}"/></svg>'
    ).encode()


def test_png_and_jpeg_images_are_drawn_without_warning() -> None:
    import base64

    png = base64.b64encode(pyvips.Image.black(2, 2, bands=3).pngsave_buffer()).decode()
    jpeg = base64.b64encode(pyvips.Image.black(2, 2, bands=3).jpegsave_buffer()).decode()
    for href in (f"data:image/png;base64,{png}", f"data:image/jpeg;base64,{jpeg}"):
        result = render_svg(_image_svg(href), RenderSpec(widths=(64,), formats=("png",)))
        assert result.warnings == ()
        assert _decode(result.renditions[0].data)(32, 32)[3] == 255  # drawn


@pytest.mark.parametrize(
    ("href", "identifier", "words"),
    [
        (
            "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
            "logo",
            "embedded image 'logo' was not drawn: it is image/gif; only PNG and JPEG data: URLs are rendered",
        ),
        (
            "data:image/webp;base64,UklGRhYAAABXRUJQ",
            None,
            "embedded image number 1 was not drawn: it is image/webp",
        ),
        (
            "data:image/png;base64,/9j/4AAQSkZJRgABAQ",
            "x",
            "it is labelled image/png but its data is a JPEG",
        ),
        ("data:image/png;base64,%%%%", "x", "its data: URL is not valid base64"),
        ("photo.png", "x", "it refers to a file outside the SVG"),
    ],
)
def test_images_the_renderer_declines_are_warned_about(
    href: str, identifier: str | None, words: str
) -> None:
    result = render_svg(_image_svg(href, identifier), RenderSpec(widths=(64,), formats=("png",)))

    assert len(result.warnings) == 1
    assert words in result.warnings[0]
    assert [(r.width, r.height) for r in result.renditions] == [(64, 64)]


def test_use_bomb_reason_says_so() -> None:
    defs = '<rect id="l0" width="1" height="1"/>'
    for level in range(1, 7):
        defs += f'<g id="l{level}">' + f'<use href="#l{level - 1}"/>' * 10 + "</g>"
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><defs>{defs}</defs>'
        '<use href="#l6"/></svg>'
    ).encode()

    with pytest.raises(RenderRejected) as caught:
        render_svg(svg, RenderSpec(widths=(64,), formats=("png",)))

    assert caught.value.reason.startswith(
        "could not be rendered: its <use> elements expand to more than 500,000 elements"
    )


def test_entities_are_refused_before_rendering() -> None:
    svg = (
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY w "10">]>'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="&w;" height="10"/>'
    )
    with pytest.raises(RenderRejected, match="entities"):
        render_svg(svg, SPEC)


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("ISO-8859-1", "caf\u00e9".encode("latin-1")),
        ("UTF-16", None),
    ],
)
def test_declared_encodings_are_read(encoding: str, data: bytes | None) -> None:
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?><svg xmlns="http://www.w3.org/2000/svg"'
        ' width="10" height="10"><title>caf\u00e9</title><circle cx="5" cy="5" r="4"/></svg>'
    )
    svg = text.encode("latin-1") if data else text.encode("utf-16")

    result = render_svg(svg, RenderSpec(widths=(64,), formats=("png",)))

    assert _decode(result.renditions[0].data)(32, 32)[3] == 255


def test_unsupported_declared_encoding_is_refused() -> None:
    svg = b'<?xml version="1.0" encoding="windows-1252"?>' + MDI_FORWARD
    with pytest.raises(RenderRejected) as caught:
        render_svg(svg, SPEC)

    assert caught.value.reason == (
        'declares the text encoding "windows-1252", which is not supported; save it as UTF-8'
    )
