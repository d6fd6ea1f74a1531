"""The render guard on its own: hostile SVGs that got past the batcher's check.

The batcher refuses these files before anything renders them; here they go straight to
the processor's render pool, to prove the second line holds too: nothing outside the
SVG is ever read or fetched, every render ends with a reason or a harmless picture, the
workers stay alive, and their memory stays bounded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pyvips
from ingest_processor.pool import RenderPool
from ingest_processor.render import RenderRejected, RenderSpec

from tests.reliability.hostile import DEEP, LAUGHS, NS, PNG_MAGIC, XXE

GIB = 2**30
RED_PNG = pyvips.Image.black(64, 64).new_from_image([255, 0, 0]).write_to_buffer(".png")


@pytest.fixture
def web_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request it gets."""
    requests: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(RED_PNG)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()


def referencing(href: str) -> bytes:
    return (
        f'<svg {NS} width="64" height="64"><image href="{href}" width="64" height="64"/>'
        f'<image xlink:href="{href}" width="64" height="64"/>'
        f'<rect width="64" height="64" fill="url({href})"/></svg>'
    ).encode()


def red_pixels(png: bytes) -> float:
    image = pyvips.Image.new_from_buffer(png, "")
    red = (image[0] > 200) & (image[1] < 60) & (image[3] > 200)
    return float(red.avg()) / 255


def peak_memory(pids: list[int]) -> int:
    peak = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
    return peak


async def test_files_and_urls_are_never_read_or_fetched(
    tmp_path: Path, web_server: tuple[str, list[str]], data_lost: Callable[[int], None]
) -> None:
    base, requests = web_server
    local = tmp_path / "secret.png"
    local.write_bytes(RED_PNG)
    data_lost(0)
    async with RenderPool(1, RenderSpec(widths=(64,), formats=("png",)), timeout=20) as pool:
        for href in (f"file://{local}", str(local), "secret.png", f"{base}/remote.png"):
            try:
                result = await pool.render(referencing(href))
            except RenderRejected:
                continue  # refusing is fine too; fetching is not
            [rendition] = result.renditions
            assert red_pixels(rendition.data) == 0, f"{href} was read into the picture"
    assert requests == [], "the renderer fetched a URL"


HOSTILE = {
    "png renamed": PNG_MAGIC + bytes(256),
    "html renamed": b"<!DOCTYPE html><html><body><svg></svg></body></html>",
    "truncated": f'<svg {NS} width="24" height="24"><path d="M0 0L24'.encode(),
    "zero bytes": b"",
    "100000 x 100000": f'<svg {NS} width="100000" height="100000"><rect width="9" height="9"/></svg>'.encode(),
    "giant viewBox": f'<svg {NS} viewBox="0 0 1000000 1000000"><circle r="400000" cx="500000" cy="500000"/></svg>'.encode(),
    "1 x 20000 sliver": f'<svg {NS} width="1" height="20000"><rect width="1" height="9"/></svg>'.encode(),
    "billion laughs": LAUGHS.encode(),
    "xxe": XXE.encode(),
    "deep nesting": f'<svg {NS} width="24" height="24">{DEEP}</svg>'.encode(),
    "script": f'<svg {NS} width="24" height="24"><script>alert(1)</script><rect width="9" height="9"/></svg>'.encode(),
    "foreignObject": f'<svg {NS} width="24" height="24"><foreignObject width="9" height="9"><p>x</p></foreignObject></svg>'.encode(),
    "over the size limit": f'<svg {NS} width="24" height="24"><!--{"x" * (6 * 2**20)}--></svg>'.encode(),
}


async def test_hostile_svgs_end_with_a_reason_and_the_workers_survive(
    data_lost: Callable[[int], None],
) -> None:
    spec = RenderSpec()
    good = f'<svg {NS} width="24" height="24"><rect width="12" height="12" fill="#08f"/></svg>'.encode()
    outcomes: dict[str, str] = {}
    async with RenderPool(2, spec, timeout=20) as pool:
        for name, svg in HOSTILE.items():
            try:
                result = await pool.render(svg)
                outcomes[name] = f"rendered {len(result.renditions)} harmless outputs"
            except RenderRejected as exc:
                outcomes[name] = exc.reason
        # Between and after all that, a good file still renders: the workers are alive.
        survived = await asyncio.gather(*(pool.render(good) for _ in range(4)))
        memory = peak_memory(pool.worker_pids())
        crashes = pool.stats.crashes
    data_lost(4 - len(survived))
    assert all(len(r.renditions) == 8 for r in survived)
    for name in (
        "png renamed",
        "html renamed",
        "zero bytes",
        "100000 x 100000",
        "giant viewBox",
        "over the size limit",
        "1 x 20000 sliver",
    ):
        assert not outcomes[name].startswith("rendered"), f"{name}: {outcomes[name]}"
    assert "100000" in outcomes["100000 x 100000"]
    assert crashes == 0, outcomes
    assert memory < GIB, f"a render worker peaked at {memory / 2**20:.0f} MiB"
