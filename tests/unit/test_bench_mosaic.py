"""The mosaic benchmark's own measurement on the sample sets: what it compares is what it says."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
bench = importlib.import_module("mosaic")


def test_flat_families_compose_lossless_and_exact_and_smaller_with_auto() -> None:
    spec = bench.MosaicSpec()
    families = bench.load_families(bench.SAMPLE_SETS, 1, 4, spec.tile, seed=1)

    figures = bench.measure(families, spec, rounds=1)

    assert set(figures) == {"mdi-essentials", "openmoji-sampler", "mixed"}
    icons = figures["mdi-essentials"]
    assert (icons.families, icons.lossless) == (1, 1)
    assert icons.psnr["auto"] == bench.PSNR_CAP > icons.psnr["before"]
    assert icons.webp_kib["auto"] < icons.webp_kib["before"]
    assert all(f.ms["before"] > 0 and f.ms["auto"] > 0 for f in figures.values())
