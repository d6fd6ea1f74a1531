"""Mosaic benchmark: the previewer's family mosaic, its WebP always lossy (before) against
lossless where every tile's own WebP is (auto, the default), on the same families.

Run: ``uv run --frozen python bench/mosaic.py [--svgs DIR ...] [--families N] [--rounds R]``

A family is ``--tiles`` SVGs drawn from one package (the folder they are in: a family is one
style, as in the marketplace) or from all of them ("mixed"). Each SVG is rendered by the
processor's own `render_svg` at the mosaic's cell width and 64 px, PNG and WebP: the cell's PNG
is the tile, and the WebP's mode (auto: lossless when smaller at 64 px) is what
``images.renditions`` records. Both contenders compose every family in interleaved rounds, in
this process, timed in CPU time (libvips' threads included); each figure is the median round.
Quality is PSNR of the WebP against the mosaic's own PNG (exact: lossless).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest_previewer.mosaic import Mosaic, compose_mosaic
from ingest_previewer.spec import MosaicSpec
from ingest_processor.render import RenderSpec, render_svg
from render import PSNR_CAP, SAMPLE_SETS, psnr

CORPUS = Path("/work/shared/corpus")


@dataclass(frozen=True)
class Family:
    group: str  # the package, or "mixed"
    tiles: list[bytes]  # cell-sized PNG renditions
    flat: bool  # every tile's WebP rendition is lossless


@dataclass(frozen=True)
class Figures:
    families: int
    lossless: int  # of them, mosaics whose WebP auto made lossless
    ms: dict[str, float]  # contender → median CPU ms per mosaic
    webp_kib: dict[str, float]  # contender → mean WebP size
    psnr: dict[str, float]  # contender → mean PSNR against the mosaic's PNG


def load_families(
    dirs: Sequence[Path], count: int, tiles: int, tile: int, seed: int
) -> list[Family]:
    """``count`` families per package (with at least ``tiles`` SVGs) and ``count`` mixed ones."""
    rng = random.Random(seed)
    packages: dict[str, list[Path]] = {}
    for path in sorted(p for d in dirs for p in d.rglob("*.svg") if p.is_file()):
        packages.setdefault(path.parent.name, []).append(path)
    spec = RenderSpec(widths=(64, tile), formats=("png", "webp"))
    cache: dict[Path, tuple[bytes, bool]] = {}

    def rendered(path: Path) -> tuple[bytes, bool]:
        if path not in cache:
            renditions = render_svg(path.read_bytes(), spec).renditions
            png = next(r.data for r in renditions if r.width == tile and r.format == "png")
            cache[path] = (png, all(r.lossless for r in renditions if r.format == "webp"))
        return cache[path]

    groups = {name: paths for name, paths in packages.items() if len(paths) >= tiles}
    groups["mixed"] = [p for paths in packages.values() for p in paths]
    families = []
    for name, paths in groups.items():
        for _ in range(count):
            drawn = [rendered(p) for p in rng.sample(paths, tiles)]
            families.append(Family(name, [png for png, _ in drawn], all(f for _, f in drawn)))
    return families


def mosaic_psnr(mosaic: Mosaic) -> float:
    """The WebP's PSNR against the mosaic's own PNG, an exact one counted as PSNR_CAP."""
    return min(psnr(mosaic.png, mosaic.webp), PSNR_CAP)


def compose(family: Family, spec: MosaicSpec, contender: str) -> Mosaic:
    # before: always lossy (the flag unset); auto: lossless where every tile's WebP is.
    return compose_mosaic(family.tiles, spec, flat_tiles=contender == "auto" and family.flat)


def measure(families: Sequence[Family], spec: MosaicSpec, rounds: int) -> dict[str, Figures]:
    contenders = ("before", "auto")
    groups = sorted({f.group for f in families}, key=lambda g: (g == "mixed", g))
    times: dict[tuple[str, str], list[float]] = {}
    for n in range(rounds):
        order = contenders if n % 2 == 0 else contenders[::-1]
        for contender in order:
            for group in groups:
                members = [f for f in families if f.group == group]
                started = time.process_time()
                for family in members:
                    compose(family, spec, contender)
                elapsed = (time.process_time() - started) / len(members) * 1000
                times.setdefault((group, contender), []).append(elapsed)
    figures = {}
    for group in groups:
        members = [f for f in families if f.group == group]
        mosaics = {c: [compose(f, spec, c) for f in members] for c in contenders}
        figures[group] = Figures(
            families=len(members),
            lossless=sum(m.webp_lossless for m in mosaics["auto"]),
            ms={c: statistics.median(times[group, c]) for c in contenders},
            webp_kib={
                c: sum(len(m.webp) for m in ms) / len(ms) / 1024 for c, ms in mosaics.items()
            },
            psnr={c: statistics.fmean(mosaic_psnr(m) for m in ms) for c, ms in mosaics.items()},
        )
    return figures


def report(figures: dict[str, Figures]) -> None:
    print(
        f"{'family':10} {'n':>3} {'lossless':>8}   {'CPU ms per mosaic':>21}   "
        f"{'WebP KiB':>17}   {'PSNR dB (100: exact)':>20}"
    )
    print(
        f"{'':10} {'':>3} {'':>8}   {'before':>9} {'auto':>5} {'ratio':>5}   "
        f"{'before':>7} {'auto':>5} {'ratio':>5}   {'before':>9} {'auto':>9}"
    )
    for group, f in figures.items():
        print(
            f"{group:10} {f.families:3} {f.lossless:8}   {f.ms['before']:9.1f} {f.ms['auto']:5.1f} "
            f"{f.ms['auto'] / f.ms['before']:5.2f}   {f.webp_kib['before']:7.1f} "
            f"{f.webp_kib['auto']:5.1f} {f.webp_kib['auto'] / f.webp_kib['before']:5.2f}   "
            f"{f.psnr['before']:9.1f} {f.psnr['auto']:9.1f}"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    default = [CORPUS] if CORPUS.is_dir() else list(SAMPLE_SETS)
    parser.add_argument("--svgs", type=Path, nargs="+", default=default)
    parser.add_argument("--families", type=int, default=8, help="families per group")
    parser.add_argument("--tiles", type=int, default=12, help="tiles per mosaic")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spec = MosaicSpec()
    families = load_families(args.svgs, args.families, args.tiles, spec.tile, args.seed)
    print(
        f"mosaic: {len(families)} families of {args.tiles} tiles of {spec.tile} px from "
        f"{', '.join(str(d) for d in args.svgs)}; WebP lossy q{spec.webp_quality} effort "
        f"{spec.webp_effort} (before) against lossless where every tile's is (auto); "
        f"median of {args.rounds} interleaved rounds"
    )
    report(measure(families, spec, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
