"""The render benchmark's own measurement functions on three sample SVGs, without sharp (npm).

The benchmark is only worth reading if its raw loop produces exactly the core's outputs: same
bytes means same settings, so the throughput ratio compares like with like.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from ingest_processor.render import render_svg

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    # Imported by its own name from bench/ on sys.path: the benchmark's worker processes
    # (spawn) inherit sys.path and must import the same module to unpickle its functions.
    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module("render")


bench = _load_bench()


@pytest.fixture(scope="module")
def svgs() -> list[tuple[str, bytes]]:
    # Evenly spread over both sample sets: flat icons and colourful emoji.
    return bench.load_svgs(bench.SAMPLE_SETS, 3)  # type: ignore[no-any-return]


def test_raw_loop_matches_the_core_byte_for_byte(svgs: list[tuple[str, bytes]]) -> None:
    spec = bench.ProcessorSettings().render_spec()
    assert len(svgs) == 3
    for _, svg in svgs:
        core = [(r.width, r.format, r.data) for r in render_svg(svg, spec).renditions]
        assert bench.raw_render(svg, spec) == core
        assert len(core) == len(spec.widths) * len(spec.formats)


def test_a_relative_folder_yields_absolute_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # sharp's workers run in a temporary folder: a relative path would not be found there.
    monkeypatch.chdir(ROOT)
    paths = [path for path, _ in bench.load_svgs([Path("sample/openmoji-sampler")], 2)]
    assert len(paths) == 2
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)


def test_psnr_is_infinite_for_the_same_image_and_finite_for_a_lossy_one(
    svgs: list[tuple[str, bytes]],
) -> None:
    spec = bench.ProcessorSettings().render_spec().__class__(widths=(128,), webp_mode="lossy")
    emoji = next(svg for path, svg in svgs if "openmoji" in path)
    png, webp = render_svg(emoji, spec).renditions

    assert bench.psnr(png.data, png.data) == math.inf
    assert 20 < bench.psnr(png.data, webp.data) < 80


def test_benchmark_run_without_sharp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "figures.json"
    bench.main(
        ["--limit", "3", "--rounds", "1", "--workers", "1", "--no-sharp", "--json", str(out)]
    )

    figures = json.loads(out.read_text())
    assert figures["identical_core_raw"] is True
    runs = figures["runs"]["1"]
    assert set(runs) == {"core", "raw"}
    for run in runs.values():
        assert run["outputs"] == 3 * 8
        assert run["outputs_per_s"] > 0
        assert run["peak_rss_mib"] > 10  # a worker with libvips loaded, read from /proc
    assert figures["bytes"]["core"] == figures["bytes"]["raw"]
    assert figures["quality"]["core"]["outputs"] == 3 * 4
    table = capsys.readouterr().out
    assert "PASS  core and raw outputs byte-identical" in table
    assert "core/raw throughput, 1 worker(s)" in table


async def test_cpu_of_workers_the_pool_replaced_mid_round_is_counted(
    svgs: list[tuple[str, bytes]],
) -> None:
    # A worker retired for its render count is gone from /proc before the round's second
    # reading; counted only by the live pids, a round read less CPU than it began with.
    spec = bench.ProcessorSettings().render_spec()
    core = bench.CoreContender([svg for _, svg in svgs], spec, 1, max_renders=1)
    try:
        runs = await bench.measure([core], {"sample": [0, 1, 2]}, rounds=2, log=lambda _: None)
        # A round ends once its replacements are over: none reaped later, in another's round.
        assert len(core.pool.process_pids()) == len(core.pool.worker_pids()) == 1
    finally:
        await core.close()

    run = runs[("core", 1, "sample")]
    assert core.pool.stats.recycled_for_count >= 6  # every render retired its worker
    # One worker renders all the time (a successor starts while its predecessor finishes): about
    # a CPU over the round, 0.7 beside four busy loops on two CPUs, and never more than the
    # machine has (with a margin for the clock ticks). The old reading gave 0.04 and 0.0.
    assert all(0.25 <= cpus <= 1.5 * (os.cpu_count() or 1) for cpus in run.cpus), run.cpus
