"""The render benchmark's per-package figures: each package (the SVGs' folder) is timed on its
own and has to meet the core/sharp targets on its own, so a mix cannot hide a weak package.

Also: the raw loop hands librsvg what the core hands it, so SVGs whose aspect ratio does not
round to whole pixels (fluent's 33 × 32 bomb) come out byte-identical too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ingest_processor.render import RenderSpec, render_svg

ROOT = Path(__file__).resolve().parents[2]


def _load_bench() -> ModuleType:
    # As test_bench_render: by its own name from bench/, which spawned workers import too.
    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module("render")


bench = _load_bench()

# 33 × 32 user units: a 512-wide rendition is 496.48 units high, rounded to 496 rows.
ODD_ASPECT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 33 32">'
    b'<defs><filter id="f" x="0" y="0" width="33" height="32" filterUnits="userSpaceOnUse">'
    b'<feGaussianBlur stdDeviation="1"/></filter></defs>'
    b'<rect x="2" y="20" width="29" height="11.7" fill="#c33" filter="url(#f)"/>'
    b'<circle cx="16.5" cy="16" r="9" fill="#36c"/></svg>'
)


def test_raw_loop_matches_the_core_where_the_height_rounds() -> None:
    spec = RenderSpec()
    core = [(r.width, r.format, r.data) for r in render_svg(ODD_ASPECT, spec).renditions]

    assert bench.raw_render(ODD_ASPECT, spec) == core


def test_packages_are_the_svgs_folders() -> None:
    svgs = [("/c/mdi/a.svg", b""), ("/c/fluent/b.svg", b""), ("/c/mdi/c.svg", b"")]

    assert bench.packages_of(svgs) == {"fluent": [1], "mdi": [0, 2]}


def test_a_contenders_round_is_the_sum_of_its_packages() -> None:
    a = bench.Run(walls=[1.0, 2.0], cpus=[1.0, 0.5], cpu_s=[1.0, 1.0], peak_rss_mib=80)
    b = bench.Run(walls=[3.0, 2.0], cpus=[1.0, 1.0], cpu_s=[3.0, 2.0], peak_rss_mib=90)
    a.outputs = [bench.Output(0, 64, "png", 10)]
    b.outputs = [bench.Output(1, 64, "png", 20)]

    total = bench.total_run([a, b])

    assert total.walls == [4.0, 4.0]
    assert total.cpus == [1.0, 0.75]
    assert total.peak_rss_mib == 90
    assert [o.svg for o in total.outputs] == [0, 1]


def _run(outputs_per_s: float) -> dict[str, Any]:
    return {
        "outputs_per_s": outputs_per_s,
        "svgs_per_s": outputs_per_s / 8,
        "wall_s": 1.0,
        "cpus_busy": 1.0,
        "peak_rss_mib": 80.0,
    }


def _figures(core: float, sharp: float, core_bytes: int = 90) -> dict[str, Any]:
    return {
        "svgs": 10,
        "runs": {"1": {"core": _run(core), "raw": _run(core), "sharp": _run(sharp)}},
        "bytes": {"core": {"total": core_bytes}, "sharp": {"total": 100}},
        "quality": {
            "core": {"mean_db": 40.0, "min_db": 30.0, "exact": 0, "outputs": 10},
            "sharp": {"mean_db": 38.0, "min_db": 30.0, "exact": 0, "outputs": 10},
        },
    }


def test_a_weak_package_fails_although_the_mix_passes() -> None:
    fig = bench.Figures(svgs=20, spec={"widths": [64], "formats": ["png"]}, rounds=1)
    total = _figures(core=200.0, sharp=100.0)
    fig.runs, fig.bytes, fig.quality = total["runs"], total["bytes"], total["quality"]
    fig.packages = {
        "mdi": _figures(core=300.0, sharp=100.0),
        "fluent": _figures(core=120.0, sharp=100.0, core_bytes=101),
    }
    fig.identical_core_raw = True

    bench.evaluate_targets(fig)

    verdicts = {t["name"]: t["pass"] for t in fig.targets}
    assert verdicts["core/sharp throughput, 1 worker(s)"] is True
    assert verdicts["mdi: core/sharp throughput, 1 worker(s)"] is True
    assert verdicts["fluent: core/sharp throughput, 1 worker(s)"] is False
    assert verdicts["fluent: core/sharp bytes"] is False
    assert verdicts["fluent: core-sharp min PSNR dB"] is True
    table = bench.format_table(fig)
    assert "FAIL  fluent: core/sharp throughput, 1 worker(s): 1.20 (target 1.5)" in table
    assert "fluent" in table.split("per package")[1].splitlines()[3]


def test_one_package_has_no_separate_targets() -> None:
    fig = bench.Figures(svgs=10, spec={"widths": [64], "formats": ["png"]}, rounds=1)
    total = _figures(core=200.0, sharp=100.0)
    fig.runs, fig.bytes, fig.quality = total["runs"], total["bytes"], total["quality"]
    fig.packages = {"fluent": total}

    bench.evaluate_targets(fig)

    assert not any(t["name"].startswith("fluent:") for t in fig.targets)
