"""SVGs for tests: real ones copied verbatim (tests must not read ../shared at CI time), and
heavy ones made by code.

- mdi "alpha-m", "ab-testing" and "forward", Material Design Icons 7.4.47 (@mdi/svg),
  Pictogrammers, Apache-2.0.
- bootstrap-icons 1.13.2 "caret-up-fill", (c) The Bootstrap Authors, MIT.
- Fluent Emoji "red circle" (fluentui-emoji 1.3.0, icons/modern), Microsoft, MIT.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor

from ingest_processor.render import render_svg
from ingest_processor.settings import ProcessorSettings
from ingest_processor.worker import prepare_render_process

MDI_ALPHA_M = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-alpha-m" viewBox="0 0 24 24"><path '
    b'd="M9,7A2,2 0 0,0 7,9V17H9V9H11V16H13V9H15V17H17V9A2,2 0 0,0 15,7H9Z" /></svg>'
)

MDI_AB_TESTING = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-ab-testing" viewBox="0 0 24 24"><path '
    b'd="M4 2A2 2 0 0 0 2 4V12H4V8H6V12H8V4A2 2 0 0 0 6 2H4M4 4H6V6H4M22 15.5V14A2 2 0 0 0 '
    b"20 12H16V22H20A2 2 0 0 0 22 20V18.5A1.54 1.54 0 0 0 20.5 17A1.54 1.54 0 0 0 22 15.5M20 "
    b'20H18V18H20V20M20 16H18V14H20M5.79 21.61L4.21 20.39L18.21 2.39L19.79 3.61Z" /></svg>'
)

MDI_FORWARD = (
    b'<svg xmlns="http://www.w3.org/2000/svg" id="mdi-forward" viewBox="0 0 24 24">'
    b'<path d="M12,8V4L20,12L12,20V16H4V8H12Z" /></svg>'
)

BOOTSTRAP_CARET_UP_FILL = b"""\
<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" fill="currentColor" \
class="bi bi-caret-up-fill" viewBox="0 0 16 16">
  <path d="m7.247 4.86-4.796 5.481c-.566.647-.106 1.659.753 1.659h9.592a1 1 0 0 0 \
.753-1.659l-4.796-5.48a1 1 0 0 0-1.506 0z"/>
</svg>"""

# Five layered radial/linear gradients with partial opacity: several times smaller as lossy
# WebP than lossless.
FLUENT_RED_CIRCLE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" fill="none" viewBox="0 0 32 32"><path fill="url('
    b'#svg-2f194295-f446-48c7-b9a3-94ed8e4140ab-a)" d="M29.757 16c0 7.732-6.268 14-14 14s-14-6'
    b'.268-14-14 6.268-14 14-14 14 6.268 14 14"/><path fill="url(#svg-ca058290-ecc1-44d8-88d7-'
    b'7bc6e08c3e0b-b)" d="M29.757 16c0 7.732-6.268 14-14 14s-14-6.268-14-14 6.268-14 14-14 14 '
    b'6.268 14 14"/><path fill="url(#svg-bb9627b1-da42-469b-8f2b-8fa581ff9564-c)" d="M29.757 1'
    b'6c0 7.732-6.268 14-14 14s-14-6.268-14-14 6.268-14 14-14 14 6.268 14 14"/><path fill="url'
    b'(#svg-b1511d55-7e48-4fac-b407-109e096e4b22-d)" d="M29.757 16c0 7.732-6.268 14-14 14s-14-'
    b'6.268-14-14 6.268-14 14-14 14 6.268 14 14"/><path fill="url(#svg-f4e8af6d-6aed-4b02-907b'
    b'-2116f07965bd-e)" d="M29.757 16c0 7.732-6.268 14-14 14s-14-6.268-14-14 6.268-14 14-14 14'
    b' 6.268 14 14"/><defs><radialGradient id="svg-2f194295-f446-48c7-b9a3-94ed8e4140ab-a" cx='
    b'"0" cy="0" r="1" gradientTransform="rotate(130.168 9.936 9.935)scale(27.8086)" gradientU'
    b'nits="userSpaceOnUse"><stop offset=".232" stop-color="#f24756"/><stop offset="1" stop-co'
    b'lor="#b22945"/></radialGradient><radialGradient id="svg-bb9627b1-da42-469b-8f2b-8fa581ff'
    b'9564-c" cx="0" cy="0" r="1" gradientTransform="rotate(136.38 10.067 10.264)scale(14.6767'
    b' 15.816)" gradientUnits="userSpaceOnUse"><stop offset=".179" stop-color="#ff6180"/><stop'
    b' offset="1" stop-color="#e5364a" stop-opacity="0"/></radialGradient><radialGradient id="'
    b'svg-b1511d55-7e48-4fac-b407-109e096e4b22-d" cx="0" cy="0" r="1" gradientTransform="matri'
    b'x(-19.25 0 0 -20 20.249 16)" gradientUnits="userSpaceOnUse"><stop offset=".62" stop-colo'
    b'r="#b73e4b" stop-opacity="0"/><stop offset=".951" stop-color="#d48387"/></radialGradient'
    b'><radialGradient id="svg-f4e8af6d-6aed-4b02-907b-2116f07965bd-e" cx="0" cy="0" r="1" gra'
    b'dientTransform="matrix(0 21 -23.3208 0 15.757 9)" gradientUnits="userSpaceOnUse"><stop o'
    b'ffset=".863" stop-color="#b83c5a" stop-opacity="0"/><stop offset="1" stop-color="#b83c5a'
    b'"/><stop offset="1" stop-color="#ac4064"/></radialGradient><linearGradient id="svg-ca058'
    b'290-ecc1-44d8-88d7-7bc6e08c3e0b-b" x1="15.757" x2="15.757" y1="2" y2="8.5" gradientUnits'
    b'="userSpaceOnUse"><stop stop-color="#dd4577"/><stop offset="1" stop-color="#ef4b5e" stop'
    b'-opacity="0"/></linearGradient></defs></svg>'
)


def blurred(circles: int) -> bytes:
    """Big blurred circles: rasterising, not parsing, costs; time grows with `circles`."""
    shapes = "".join(
        f'<circle cx="{i * 37 % 512}" cy="{i * 91 % 512}" r="200" fill="#{i % 256:02x}8040" '
        'filter="url(#b)"/>'
        for i in range(circles)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512"><defs>'
        '<filter id="b"><feGaussianBlur stdDeviation="50"/></filter></defs>'
        f"{shapes}</svg>"
    ).encode()


def cpu_seconds_to_render(svg: bytes) -> float:
    """CPU seconds this process takes to render ``svg`` with the default render spec."""
    spec = ProcessorSettings().render_spec()
    started = time.process_time()
    render_svg(svg, spec)
    return time.process_time() - started


def blurred_taking(seconds: float) -> bytes:
    """Blurred circles enough to take a render worker of this machine about ``seconds`` of CPU
    (as the render timeouts count) on one render."""
    fixed, per_circle = _blurred_render_seconds()
    return blurred(max(1, round((seconds - fixed) / per_circle)))


@functools.cache
def _blurred_render_seconds() -> tuple[float, float]:
    """A render's fixed CPU seconds and its CPU seconds per circle, measured once per test
    process in a process set up as a render worker is, warm, at two sizes.

    Not in this process, nor from one size: a cold heap with glibc's defaults renders a sixth
    slower, and a render has a fixed cost beside its circles. Sized from one cold render of 20
    circles here, an SVG meant to take 1.8× the render timeout took about 1.3× in a worker, and
    one meant for 0.6× about 0.4×.
    """
    with ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=prepare_render_process
    ) as worker:
        worker.submit(cpu_seconds_to_render, blurred(1)).result()  # warm its heap

        def seconds(circles: int) -> float:
            svg = blurred(circles)
            return min(worker.submit(cpu_seconds_to_render, svg).result() for _ in range(2))

        small, large = seconds(10), seconds(60)
    per_circle = max(large - small, 1e-3) / 50
    return max(small - 10 * per_circle, 0.0), per_circle


def paths(size: int, seed: int) -> bytes:
    """About ``size`` bytes of small filled paths on a 1000 px canvas: a traced illustration."""
    rnd = random.Random(seed)
    head = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 1000" width="1000"'
        ' height="1000">'
    )
    parts, length = [head], len(head)
    while length < size:
        x, y, w, h = (
            rnd.randrange(990),
            rnd.randrange(990),
            rnd.randrange(1, 9),
            rnd.randrange(1, 9),
        )
        path = f'<path d="M{x} {y}h{w}v{h}h-{w}z" fill="#{rnd.randrange(1 << 24):06x}"/>'
        parts.append(path)
        length += len(path)
    return ("".join(parts) + "</svg>").encode()


def inner_shadows(count: int) -> bytes:
    """Shapes with inner shadows as Figma exports them (as fluent's emoji have): every filter
    primitive makes a surface of the filter's region, created and freed within the render."""
    filters = "".join(
        f'<filter id="f{i}" x="0" y="0" width="32" height="32" filterUnits="userSpaceOnUse"'
        ' color-interpolation-filters="sRGB">'
        '<feFlood flood-opacity="0" result="bg"/>'
        '<feBlend in="SourceGraphic" in2="bg" result="shape"/>'
        '<feColorMatrix in="SourceAlpha" result="hardAlpha"'
        ' values="0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 127 0"/>'
        '<feOffset dx="-.5" dy=".5"/><feGaussianBlur stdDeviation=".5"/>'
        '<feComposite in2="hardAlpha" k2="-1" k3="1" operator="arithmetic"/>'
        '<feColorMatrix values="0 0 0 0 0.3 0 0 0 0 0.4 0 0 0 0 0.8 0 0 0 1 0"/>'
        '<feBlend in2="shape"/></filter>'
        for i in range(count)
    )
    shapes = "".join(
        f'<circle cx="{4 + 4 * i}" cy="16" r="{3 + i}" fill="#f80" filter="url(#f{i})"/>'
        for i in range(count)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32" viewBox="0 0 32 32">'
        f"<defs>{filters}</defs>{shapes}</svg>"
    ).encode()
