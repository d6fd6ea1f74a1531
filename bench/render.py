"""Render benchmark: the processor's render core against a raw pyvips loop and sharp (Node).

Run: ``uv run --frozen python bench/render.py [--svgs DIR ...] [--limit N] [--json OUT]``

Every contender turns each SVG into every configured width × format (default 4 × PNG/WebP):

* core  - ``RenderPool`` + ``render_svg`` with the processor's settings (``INGEST_*`` env vars
          apply), exactly as the service renders; timed around the pool, so pickling and IPC count.
* raw   - a plain loop of pyvips calls with the same settings in the same number of processes:
          the limit the core can approach. Its outputs must be byte-identical to the core's, so
          it hands librsvg the same rewritten document (svgdoc) as the core does.
* sharp - sharp (libvips under Node) with its default encoders (WebP quality 80 effort 4, PNG
          compressionLevel 6), installed with npm into a temporary folder. Each size is
          rasterised from the vector once (density from the SVG's declared width) and both
          encoders read that one raw render, like the core's copy_memory. Timed inside Node.

Contenders run in interleaved rounds (the order rotates every round) so a busy machine slows
them alike; each figure is the median round. Quality is PSNR of every WebP output against the
same renderer's lossless PNG of that size, computed by pyvips on RGBA premultiplied on white.

Per package: the SVGs are grouped by the folder they are in (mdi, fluent, ...). In its turn a
contender renders one package after the other, each timed on its own, so every figure exists per
package as well as in total, and the core/sharp targets (throughput, bytes, PSNR) must hold for
every package: a mix of cheap icons cannot hide a weak package.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyvips
from ingest_processor.backfill.stats import CpuMeter
from ingest_processor.pool import RenderPool
from ingest_processor.render import RenderResult, RenderSpec
from ingest_processor.settings import ProcessorSettings
from ingest_processor.svgdoc import CSS_DPI, LIBVIPS_RESOLUTION, geometry_of, read_document
from ingest_processor.worker import prepare_render_process
from procstat import peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent
# A sharp worker's reply to "run" is one JSON line listing every output of the package: a
# few hundred SVGs at 8 renditions each pass asyncio's default line limit of 64 KiB.
REPLY_LIMIT = 16 * 1024 * 1024
SAMPLE_SETS = (ROOT / "sample" / "mdi-essentials", ROOT / "sample" / "openmoji-sampler")
SHARP_VERSION = "0.35.5"
# PSNR of an exact output is infinite; a mean needs a finite stand-in.
PSNR_CAP = 100.0
TARGETS = {"core/raw": 0.95, "core/sharp": 1.5, "2 workers/1 worker": 1.8}


@dataclass(frozen=True, order=True)
class Output:
    svg: int  # index into the SVG list
    width: int
    format: str
    size: int
    digest: str = ""  # sha256 of the bytes; empty where the contender does not hash


@dataclass
class Run:
    """One contender's timed rounds at one worker count."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # worker CPU seconds / wall, per round
    cpu_s: list[float] = field(default_factory=list)  # worker CPU seconds, per round
    outputs: list[Output] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


class Contender(Protocol):
    name: str
    workers: int

    async def start(self) -> None: ...

    async def run(self, indices: Sequence[int]) -> tuple[float, list[Output]]:
        """Render the SVGs at ``indices`` (one package); the seconds and their outputs."""
        ...

    def pids(self) -> list[int]:
        """The worker processes, for their CPU time and peak RSS."""
        ...

    async def close(self) -> None: ...


# --- inputs and settings -----------------------------------------------------------------------


def load_svgs(dirs: Sequence[Path], limit: int | None) -> list[tuple[str, bytes]]:
    """Every *.svg under ``dirs`` (recursive), evenly thinned to ``limit`` to keep the mix."""
    paths = sorted(p for d in dirs for p in d.rglob("*.svg") if p.is_file())
    if limit is not None and limit < len(paths):
        paths = [paths[i * len(paths) // limit] for i in range(limit)]
    # Absolute: sharp's Node workers read these paths from another working directory.
    return [(str(p.resolve()), p.read_bytes()) for p in paths]


def packages_of(svgs: Sequence[tuple[str, bytes]]) -> dict[str, list[int]]:
    """The SVGs' indices by package, i.e. by the folder an SVG is in (sorted by name)."""
    packages: dict[str, list[int]] = {}
    for i, (path, _) in enumerate(svgs):
        packages.setdefault(Path(path).parent.name, []).append(i)
    return dict(sorted(packages.items()))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- raw: a plain pyvips loop ------------------------------------------------------------------


def raw_render(svg: bytes, spec: RenderSpec) -> list[tuple[int, str, bytes]]:
    """The same outputs as ``render_svg`` from the fewest pyvips calls: no checks, no wrappers.

    librsvg is handed what the core hands it: each width's copy of the document with the root
    tag that maps the artwork onto exactly that pixel canvas (svgdoc, plain Python). A plain
    ``scale`` makes the same pixels only where the aspect ratio rounds to whole pixels: it fits
    the artwork into the rounded height, so a 33 × 32 emoji (fluent's bomb) came out different.
    """
    document = read_document(svg)
    geometry = geometry_of(document.root)
    lossless = None if spec.webp_mode == "auto" else spec.webp_mode == "lossless"
    by_width: dict[int, list[tuple[int, str, bytes]]] = {}
    for width in sorted(set(spec.widths)):
        height = max(1, round(width * geometry.height / geometry.width))
        root = geometry.root_attributes(width, height, document.root)
        image = pyvips.Image.svgload_buffer(
            document.with_root(root), dpi=CSS_DPI, scale=72 / CSS_DPI
        )
        image = image.copy(xres=LIBVIPS_RESOLUTION, yres=LIBVIPS_RESOLUTION).copy_memory()
        outputs = []
        for fmt in spec.formats:
            if fmt == "png":
                data = image.write_to_buffer(
                    ".png", compression=spec.png_compression, palette=spec.png_palette, keep="none"
                )
            elif lossless is None:  # auto: the smallest rendition picks the mode
                ll = image.write_to_buffer(".webp", **spec.webp_options(True))
                lossy = image.write_to_buffer(".webp", **spec.webp_options(False))
                lossless = len(ll) <= len(lossy) * spec.webp_auto_slack
                data = ll if lossless else lossy
            else:
                data = image.write_to_buffer(".webp", **spec.webp_options(lossless))
            outputs.append((width, fmt, bytes(data)))
        by_width[width] = outputs
    return [o for width in spec.widths for o in by_width[width]]


_raw_spec: RenderSpec | None = None


def _raw_init(spec: RenderSpec) -> None:
    global _raw_spec
    prepare_render_process()  # the same process setup as a core worker
    _raw_spec = spec


def _raw_task(shard: list[tuple[int, bytes]]) -> tuple[float, list[Output]]:
    """Render a shard in a worker; the time excludes pickling, the hashing comes after it."""
    assert _raw_spec is not None
    started = time.perf_counter()
    rendered = [(i, raw_render(svg, _raw_spec)) for i, svg in shard]
    elapsed = time.perf_counter() - started
    outputs = [Output(i, w, f, len(d), _digest(d)) for i, outs in rendered for w, f, d in outs]
    return elapsed, outputs


class RawContender:
    name = "raw"

    def __init__(self, svgs: list[bytes], spec: RenderSpec, workers: int) -> None:
        self.svgs, self.spec, self.workers = svgs, spec, workers
        self.executor: concurrent.futures.ProcessPoolExecutor | None = None

    async def start(self) -> None:
        self.executor = concurrent.futures.ProcessPoolExecutor(
            self.workers, multiprocessing.get_context("spawn"), _raw_init, (self.spec,)
        )

    async def run(self, indices: Sequence[int]) -> tuple[float, list[Output]]:
        assert self.executor is not None
        loop = asyncio.get_running_loop()
        indexed = [(i, self.svgs[i]) for i in indices]
        shards = [indexed[k :: self.workers] for k in range(self.workers)]
        done = await asyncio.gather(
            *(loop.run_in_executor(self.executor, _raw_task, s) for s in shards)
        )
        # The shards start together; the round lasts as long as the slowest worker.
        return max(e for e, _ in done), sorted(o for _, outs in done for o in outs)

    def pids(self) -> list[int]:
        assert self.executor is not None
        return [p.pid for p in (self.executor._processes or {}).values() if p.pid]

    async def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


# --- core: the processor's RenderPool ----------------------------------------------------------


class CoreContender:
    name = "core"

    def __init__(self, svgs: list[bytes], spec: RenderSpec, workers: int, max_renders: int) -> None:
        self.svgs, self.workers = svgs, workers
        self.pool = RenderPool(workers, spec, timeout=600.0, max_renders=max_renders)
        self.results: dict[int, RenderResult] = {}  # the last result of every SVG rendered

    async def start(self) -> None:
        await self.pool.__aenter__()

    async def run(self, indices: Sequence[int]) -> tuple[float, list[Output]]:
        started = time.perf_counter()
        results = await asyncio.gather(*(self.pool.render(self.svgs[i]) for i in indices))
        elapsed = time.perf_counter() - started
        await self._replacements_over()
        self.results.update(zip(indices, results, strict=True))
        outputs = [
            Output(i, r.width, r.format, len(r.data), _digest(r.data))
            for i, result in zip(indices, results, strict=True)
            for r in result.renditions
        ]
        return elapsed, sorted(outputs)

    async def _replacements_over(self) -> None:
        """Wait until a worker the pool retired during the run (every ``max_renders``) has
        been reaped and its successor is up, so the run's CPU holds both, and none of it
        lands in another contender's window (``measure``)."""
        deadline = time.monotonic() + 60
        while not len(self.pool.process_pids()) == len(self.pool.worker_pids()) == self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the render pool's workers did not settle: {self.pool!r}")
            await asyncio.sleep(0.01)

    def pids(self) -> list[int]:
        return self.pool.process_pids()

    async def close(self) -> None:
        await self.pool.__aexit__(None, None, None)


# --- sharp: Node processes ---------------------------------------------------------------------

# Line protocol on stdin: "run PACKAGE" renders that package's SVGs of this worker's list and
# prints sizes and the time taken inside Node; "dump DIR" writes the last outputs of every SVG
# rendered; EOF exits.
SHARP_SCRIPT = r"""
const fs = require("fs");
const readline = require("readline");
const sharp = require("sharp");
sharp.concurrency(1);  // one libvips thread per process, as the core's workers
sharp.cache(false);    // rounds repeat the same inputs; no operation-cache hits
const [listFile, widthsJson, formatsJson] = process.argv.slice(2);
const listing = JSON.parse(fs.readFileSync(listFile, "utf8"));
const inputs = listing.map(([i, path, pkg]) => [i, fs.readFileSync(path), pkg]);
const widths = JSON.parse(widthsJson);
const formats = JSON.parse(formatsJson);
const last = new Map();  // index -> outputs of its last render

async function renderOne(index, buf) {
  const meta = await sharp(buf).metadata();  // declared size, at librsvg's 72 dpi
  const out = [];
  for (const width of widths) {
    // librsvg rasterises at declared width × density / 72: the vector at the target size, not
    // an upscaled bitmap; resize only fixes a rounding pixel.
    const density = (72 * width) / meta.width;
    const { data, info } = await sharp(buf, { density }).resize(width).ensureAlpha().raw()
      .toBuffer({ resolveWithObject: true });
    const raw = { raw: { width: info.width, height: info.height, channels: info.channels } };
    for (const format of formats) {
      // Default encoder settings: PNG compressionLevel 6, WebP quality 80 effort 4.
      const img = sharp(data, raw);
      const bytes = await (format === "png" ? img.png() : img.webp()).toBuffer();
      out.push([index, width, format, bytes]);
    }
  }
  return out;
}

(async () => {
  const rl = readline.createInterface({ input: process.stdin });
  console.log(JSON.stringify({ ready: true }));
  for await (const line of rl) {
    if (line.startsWith("run ")) {
      const pkg = line.slice(4);
      const started = process.hrtime.bigint();
      const done = [];
      for (const [i, buf, p] of inputs) {
        if (p === pkg) done.push([i, await renderOne(i, buf)]);
      }
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const outputs = [];
      for (const [i, outs] of done) {
        last.set(i, outs);
        for (const [, w, f, b] of outs) outputs.push([i, w, f, b.length]);
      }
      console.log(JSON.stringify({ seconds, outputs }));
    } else if (line.startsWith("dump ")) {
      const dir = line.slice(5);
      let dumped = 0;
      for (const outs of last.values()) {
        for (const [i, w, f, b] of outs) fs.writeFileSync(`${dir}/${i}-${w}.${f}`, b), dumped++;
      }
      console.log(JSON.stringify({ dumped }));
    }
  }
})();
"""


def install_sharp(folder: Path, version: str) -> float:
    """``npm install sharp`` into ``folder``; returns the seconds it took."""
    started = time.perf_counter()
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", f"sharp@{version}"],
        cwd=folder,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


class SharpContender:
    name = "sharp"

    def __init__(
        self, paths: list[str], spec: RenderSpec, workers: int, folder: Path, scratch: Path
    ) -> None:
        self.paths, self.spec, self.workers = paths, spec, workers
        self.folder, self.scratch = folder, scratch
        self.package = {i: Path(p).parent.name for i, p in enumerate(paths)}
        self.procs: list[asyncio.subprocess.Process] = []
        self.startup = 0.0
        self.last_outputs: list[Output] = []

    async def start(self) -> None:
        script = self.folder / "render.js"
        script.write_text(SHARP_SCRIPT)
        started = time.perf_counter()
        for k in range(self.workers):
            # Each package is dealt out to the workers alike, as the raw loop deals it.
            shard = [
                (i, self.paths[i], name)
                for name, indices in packages_of([(p, b"") for p in self.paths]).items()
                for i in indices[k :: self.workers]
            ]
            listing = self.scratch / f"sharp-list-{self.workers}-{k}.json"
            listing.write_text(json.dumps(shard))
            args = [str(script), str(listing), json.dumps(self.spec.widths)]
            args.append(json.dumps(self.spec.formats))
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    "node", *args, cwd=self.folder, stdin=PIPE, stdout=PIPE, limit=REPLY_LIMIT
                )
            )
        await self._ask_all(None)  # the "ready" lines: start-up is timed separately
        self.startup = time.perf_counter() - started

    async def _ask_all(self, command: str | None) -> list[dict[str, Any]]:
        async def ask(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdin is not None
            assert proc.stdout is not None
            if command is not None:
                proc.stdin.write(command.encode() + b"\n")
                await proc.stdin.drain()
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sharp worker exited with {await proc.wait()}")
            reply: dict[str, Any] = json.loads(line)
            return reply

        return list(await asyncio.gather(*(ask(p) for p in self.procs)))

    async def run(self, indices: Sequence[int]) -> tuple[float, list[Output]]:
        packages = {self.package[i] for i in indices}
        if len(packages) != 1:
            raise ValueError(f"sharp runs one package at a time, got {sorted(packages)}")
        replies = await self._ask_all(f"run {packages.pop()}")
        outputs = sorted(Output(i, w, f, n) for r in replies for i, w, f, n in r["outputs"])
        if sorted({o.svg for o in outputs}) != sorted(indices):
            raise RuntimeError("sharp rendered other SVGs than asked")
        self.last_outputs = sorted(
            [o for o in self.last_outputs if o.svg not in set(indices)] + outputs
        )
        return max(float(r["seconds"]) for r in replies), outputs

    async def dump(self, folder: Path) -> None:
        await self._ask_all(f"dump {folder}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    async def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            await proc.wait()


PIPE = asyncio.subprocess.PIPE


# --- quality -----------------------------------------------------------------------------------


def _on_white(data: bytes) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(data, "")
    if not image.hasalpha():
        image = image.addalpha()
    # flatten composites premultiplied: colour under transparent pixels cannot count.
    return image.colourspace("srgb").flatten(background=[255, 255, 255]).cast("float")


def psnr(reference: bytes, candidate: bytes) -> float:
    """PSNR in dB of ``candidate`` against ``reference``, both composited on white."""
    diff = _on_white(reference) - _on_white(candidate)
    mse = float((diff * diff).avg())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@dataclass(frozen=True)
class Quality:
    outputs: int  # WebP outputs measured
    exact: int  # of which identical to the lossless reference
    mean_db: float  # exact outputs count as PSNR_CAP
    min_db: float


def quality(pairs: Sequence[tuple[bytes, bytes]]) -> Quality:
    """``pairs`` of (lossless reference, WebP output) of the same renderer and size."""
    values = [psnr(ref, out) for ref, out in pairs]
    capped = [min(v, PSNR_CAP) for v in values]
    return Quality(
        outputs=len(values),
        exact=sum(1 for v in values if v == math.inf),
        mean_db=statistics.mean(capped) if capped else math.nan,
        min_db=min(capped) if capped else math.nan,
    )


def core_pairs(results: Sequence[RenderResult], spec: RenderSpec) -> list[tuple[bytes, bytes]]:
    """(PNG, WebP) of each width; with palette PNG on, a fresh lossless PNG is the reference."""
    pairs: list[tuple[bytes, bytes]] = []
    if spec.png_palette:
        return pairs
    for result in results:
        by = {(r.width, r.format): r.data for r in result.renditions}
        for (width, fmt), data in by.items():
            if fmt != "webp" or (width, "png") not in by:
                continue
            pairs.append((by[(width, "png")], data))
    return pairs


def sharp_pairs(folder: Path, outputs: Sequence[Output]) -> list[tuple[bytes, bytes]]:
    pairs = []
    for o in outputs:
        if o.format == "webp":
            png = folder / f"{o.svg}-{o.width}.png"
            pairs.append((png.read_bytes(), (folder / f"{o.svg}-{o.width}.webp").read_bytes()))
    return pairs


# --- the run -----------------------------------------------------------------------------------


async def measure(
    contenders: Sequence[Contender],
    packages: dict[str, list[int]],
    rounds: int,
    log: Any = print,
) -> dict[tuple[str, int, str], Run]:
    """Start all, one untimed warm-up round each, then ``rounds`` rounds in rotating order.

    Every contender at every worker count takes part in every round, so a machine that gets
    busier or quieter during the run shifts them all alike, the worker counts included. In its
    turn a contender renders one package after the other, each timed on its own: a package's
    figures are its own, and a contender's round is the sum of its packages.
    """
    runs = {(c.name, c.workers, p): Run() for c in contenders for p in packages}
    for c in contenders:
        await c.start()
        for indices in packages.values():
            await c.run(indices)  # warm-up: page in libraries, fill allocator pools
    for k in range(rounds):
        for j in range(len(contenders)):
            c = contenders[(k + j) % len(contenders)]
            total = 0.0
            for p, indices in packages.items():
                # The workers' CPU, those the core's pool replaced meanwhile included.
                meter = CpuMeter(c.pids)
                wall, outputs = await c.run(indices)
                run = runs[(c.name, c.workers, p)]
                run.walls.append(wall)
                run.cpu_s.append(meter.read()[0])
                run.cpus.append(run.cpu_s[-1] / wall)
                run.outputs = outputs
                total += wall
            log(f"  round {k + 1}/{rounds} {c.name:5} × {c.workers} {total:7.2f} s")
    for c in contenders:
        peak = peak_rss_mib(c.pids())
        for p in packages:
            runs[(c.name, c.workers, p)].peak_rss_mib = peak
    return runs


def total_run(runs: Sequence[Run]) -> Run:
    """One contender's run over all packages: per round, the sum of the packages' times."""
    total = Run(peak_rss_mib=max(r.peak_rss_mib for r in runs))
    for k in range(len(runs[0].walls)):
        wall, cpu_s = sum(r.walls[k] for r in runs), sum(r.cpu_s[k] for r in runs)
        total.walls.append(wall)
        total.cpu_s.append(cpu_s)
        total.cpus.append(cpu_s / wall)
    total.outputs = sorted(o for r in runs for o in r.outputs)
    return total


@dataclass
class Figures:
    svgs: int
    spec: dict[str, Any]
    rounds: int
    runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The same figures per package (the SVGs' folder): {name: {"svgs", "runs", "bytes", ...}}.
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    identical_core_raw: bool | None = None
    node_startup_s: float | None = None
    npm_install_s: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)


def summarise_run(run: Run, svgs: int) -> dict[str, Any]:
    return {
        "wall_s": run.wall,
        "walls_s": run.walls,
        "svgs_per_s": svgs / run.wall,
        "outputs_per_s": len(run.outputs) / run.wall,
        "outputs": len(run.outputs),
        "cpus_busy": statistics.median(run.cpus),
        "peak_rss_mib": run.peak_rss_mib,
    }


def byte_totals(outputs: Sequence[Output]) -> dict[str, int]:
    totals = {"total": 0}
    for o in outputs:
        totals["total"] += o.size
        totals[o.format] = totals.get(o.format, 0) + o.size
    return totals


def _per_cpu(run: dict[str, Any]) -> float:
    """Outputs per CPU-second (NaN where a run too short for /proc's ticks read no CPU)."""
    busy = float(run["cpus_busy"])
    return float(run["outputs_per_s"]) / busy if busy > 0 else math.nan


def evaluate_targets(fig: Figures) -> None:
    """Fill ``fig.targets``: one entry per target and worker count, with PASS or FAIL.

    The core/sharp targets (throughput, bytes, PSNR) hold for the whole set and for every
    package on its own, so a mix cannot hide a weak package.
    """

    def add(name: str, value: float, target: float, passed: bool, note: str = "") -> None:
        fig.targets.append(
            {"name": name, "value": value, "target": target, "pass": passed, "note": note}
        )

    def versus_sharp(prefix: str, figures: dict[str, Any]) -> None:
        runs, total, quality = figures["runs"], figures["bytes"], figures["quality"]
        for n, by in runs.items():
            if "sharp" in by:
                ratio = by["core"]["outputs_per_s"] / by["sharp"]["outputs_per_s"]
                target = TARGETS["core/sharp"]
                note = f"per CPU-second {_per_cpu(by['core']) / _per_cpu(by['sharp']):.2f}x"
                add(f"{prefix}core/sharp throughput, {n} worker(s)", ratio, target,
                    ratio >= target, note)  # fmt: skip
        if "sharp" in total:
            ratio = total["core"]["total"] / total["sharp"]["total"]
            add(f"{prefix}core/sharp bytes", ratio, 1.0, ratio <= 1.0)
            core, sharp = quality["core"], quality["sharp"]
            add(f"{prefix}core-sharp mean PSNR dB", core["mean_db"] - sharp["mean_db"], 0.0,
                core["mean_db"] >= sharp["mean_db"])  # fmt: skip
            add(f"{prefix}core-sharp min PSNR dB", core["min_db"] - sharp["min_db"], 0.0,
                core["min_db"] >= sharp["min_db"])  # fmt: skip

    for n, runs in fig.runs.items():
        ratio = runs["core"]["outputs_per_s"] / runs["raw"]["outputs_per_s"]
        target = TARGETS["core/raw"]
        add(f"core/raw throughput, {n} worker(s)", ratio, target, ratio >= target)
    versus_sharp("", {"runs": fig.runs, "bytes": fig.bytes, "quality": fig.quality})
    if "1" in fig.runs and "2" in fig.runs:
        ratio = fig.runs["2"]["core"]["outputs_per_s"] / fig.runs["1"]["core"]["outputs_per_s"]
        target = TARGETS["2 workers/1 worker"]
        # On a shared machine the second worker may not get a core: say how many it got.
        cpus = fig.runs["2"]["core"]["cpus_busy"] / fig.runs["1"]["core"]["cpus_busy"]
        note = f"the workers got {cpus:.2f}x the CPU time per second; per CPU-second"
        note += f" {ratio / cpus:.2f}x"
        add("core 2 workers/1 worker", ratio, target, ratio >= target, note)
    if fig.identical_core_raw is not None:
        same = fig.identical_core_raw
        add("core and raw outputs byte-identical", float(same), 1.0, same)
    if len(fig.packages) > 1:  # with one package, its figures are the totals
        for name, figures in fig.packages.items():
            versus_sharp(f"{name}: ", figures)


def format_table(fig: Figures) -> str:
    lines = [
        f"{fig.svgs} SVGs × {len(fig.spec['widths'])} widths × {len(fig.spec['formats'])} formats;"
        f" median of {fig.rounds} interleaved rounds",
        "",
        f"{'workers':>7} {'contender':9} {'SVGs/s':>8} {'outputs/s':>10} {'wall s':>8}"
        f" {'CPUs busy':>9} {'outputs/CPU-s':>13} {'peak RSS MiB':>13}",
    ]
    for n, runs in fig.runs.items():
        for name, r in runs.items():
            lines.append(
                f"{n:>7} {name:9} {r['svgs_per_s']:8.1f} {r['outputs_per_s']:10.1f}"
                f" {r['wall_s']:8.2f} {r['cpus_busy']:9.2f}"
                f" {_per_cpu(r):13.1f} {r['peak_rss_mib']:13.0f}"
            )
    lines += ["", f"{'contender':9} {'bytes':>10} {'PNG':>10} {'WebP':>10}  WebP PSNR dB mean/min"]
    for name, b in fig.bytes.items():
        q = fig.quality.get(name)
        qtext = (
            f"{q['mean_db']:.1f} / {q['min_db']:.1f}  ({q['exact']}/{q['outputs']} exact)"
            if q
            else "same bytes as core"
        )
        lines.append(
            f"{name:9} {b['total']:10,} {b.get('png', 0):10,} {b.get('webp', 0):10,}  {qtext}"
        )
    lines += ["", *format_packages(fig)]
    if fig.node_startup_s is not None:
        lines.append(
            f"\nsharp: npm install {fig.npm_install_s or 0:.1f} s, Node start-up"
            f" {fig.node_startup_s:.2f} s (not in the figures above)"
        )
    lines.append("")
    for t in fig.targets:
        verdict = "PASS" if t["pass"] else "FAIL"
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"{verdict}  {t['name']}: {t['value']:.2f} (target {t['target']:g}){note}")
    return "\n".join(lines)


def format_packages(fig: Figures) -> list[str]:
    """Per package: core against sharp (outputs/s, outputs per CPU-s) and raw, bytes, PSNR."""
    lines = [
        "per package (the SVGs' folder); ratios of outputs/s, [per CPU-s]; PSNR dB mean/min",
        f"{'package':12} {'SVGs':>5} {'workers':>7} {'core/sharp':>10} {'[CPU-s]':>8}"
        f" {'core/raw':>8} {'[CPU-s]':>8} {'bytes/sharp':>11}  {'core PSNR':>11}  sharp PSNR",
    ]
    for name, p in fig.packages.items():
        bytes_ratio = quality = ""
        if "sharp" in p["bytes"]:
            bytes_ratio = f"{p['bytes']['core']['total'] / p['bytes']['sharp']['total']:.3f}"
            core, sharp = p["quality"]["core"], p["quality"]["sharp"]
            quality = (
                f"{core['mean_db']:5.1f}/{core['min_db']:5.1f}"
                f"  {sharp['mean_db']:5.1f}/{sharp['min_db']:5.1f}"
            )
        for k, (n, runs) in enumerate(p["runs"].items()):
            core = runs["core"]
            vs_sharp = vs_sharp_cpu = ""
            if "sharp" in runs:
                vs_sharp = f"{core['outputs_per_s'] / runs['sharp']['outputs_per_s']:.2f}"
                vs_sharp_cpu = f"{_per_cpu(core) / _per_cpu(runs['sharp']):.2f}"
            vs_raw = core["outputs_per_s"] / runs["raw"]["outputs_per_s"]
            vs_raw_cpu = _per_cpu(core) / _per_cpu(runs["raw"])
            head = f"{name:12} {p['svgs']:5}" if k == 0 else f"{'':12} {'':5}"
            lines.append(
                f"{head} {n:>7} {vs_sharp:>10} {vs_sharp_cpu:>8} {vs_raw:8.2f} {vs_raw_cpu:8.2f}"
                + (f" {bytes_ratio:>11}  {quality}" if k == 0 else "")
            )
    return lines


async def run_benchmark(args: argparse.Namespace, log: Any = print) -> Figures:
    svgs = load_svgs([Path(d) for d in args.svgs] if args.svgs else SAMPLE_SETS, args.limit)
    if not svgs:
        raise SystemExit("no SVGs found")
    packages = packages_of(svgs)
    settings = ProcessorSettings()  # the processor's render settings, environment included
    spec = settings.render_spec()
    fig = Figures(svgs=len(svgs), spec=asdict(spec), rounds=args.rounds)
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        scratch = Path(tmp)
        sharp_dir = _sharp_folder(args, scratch, fig, log)
        contenders = [
            c
            for n in args.workers
            for c in _contenders(svgs, spec, n, settings.render_max_renders, sharp_dir, scratch)
        ]
        try:
            runs = await measure(contenders, packages, args.rounds, log)
            # The last round's outputs, before the workers close.
            qualities = await _quality({c.name: c for c in contenders}, packages, spec, scratch)
        finally:
            for c in contenders:
                await c.close()
        names = list(dict.fromkeys(c.name for c in contenders))
        for name in names:
            for n in args.workers:
                total = total_run([runs[(name, n, p)] for p in packages])
                fig.runs.setdefault(str(n), {})[name] = summarise_run(total, len(svgs))
                fig.bytes[name] = byte_totals(total.outputs)
            fig.quality = {name: asdict(q) for name, q in qualities.get("", {}).items()}
        for p, indices in packages.items():
            figures: dict[str, Any] = {"svgs": len(indices), "runs": {}, "bytes": {}}
            for name in names:
                for n in args.workers:
                    run = runs[(name, n, p)]
                    figures["runs"].setdefault(str(n), {})[name] = summarise_run(run, len(indices))
                    figures["bytes"][name] = byte_totals(run.outputs)
            figures["quality"] = {name: asdict(q) for name, q in qualities[p].items()}
            fig.packages[p] = figures
        fig.identical_core_raw = all(
            _identical(runs[("core", n, p)].outputs, runs[("raw", n, p)].outputs)
            for n in args.workers
            for p in packages
        )
        startups = [c.startup for c in contenders if isinstance(c, SharpContender)]
        fig.node_startup_s = max(startups) if startups else None
    evaluate_targets(fig)
    return fig


def _contenders(
    svgs: list[tuple[str, bytes]],
    spec: RenderSpec,
    n: int,
    max_renders: int,
    sharp_dir: Path | None,
    scratch: Path,
) -> list[Contender]:
    data = [d for _, d in svgs]
    contenders: list[Contender] = [
        CoreContender(data, spec, n, max_renders),
        RawContender(data, spec, n),
    ]
    if sharp_dir is not None:
        paths = [p for p, _ in svgs]
        contenders.append(SharpContender(paths, spec, n, sharp_dir, scratch))
    return contenders


def _identical(core: Sequence[Output], raw: Sequence[Output]) -> bool:
    return [(o.svg, o.width, o.format, o.digest) for o in core] == [
        (o.svg, o.width, o.format, o.digest) for o in raw
    ]


def _sharp_folder(args: argparse.Namespace, scratch: Path, fig: Figures, log: Any) -> Path | None:
    if args.no_sharp:
        return None
    if args.sharp_dir:
        return Path(args.sharp_dir)
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise SystemExit("sharp needs node and npm on PATH (or pass --no-sharp)")
    folder = scratch / "sharp"
    folder.mkdir()
    log(f"npm install sharp@{args.sharp_version} …")
    fig.npm_install_s = install_sharp(folder, args.sharp_version)
    return folder


async def _quality(
    contenders: dict[str, Contender],
    packages: dict[str, list[int]],
    spec: RenderSpec,
    scratch: Path,
) -> dict[str, dict[str, Quality]]:
    """Untimed, before the workers close: PSNR of the last round's WebP outputs.

    Keyed by package, and "" for all of them. The raw loop's outputs are byte-identical to the
    core's (checked), so its quality is the core's.
    """
    core = contenders["core"]
    assert isinstance(core, CoreContender)
    pairs: dict[str, dict[str, list[tuple[bytes, bytes]]]] = {}
    for p, indices in packages.items():
        pairs[p] = {"core": core_pairs([core.results[i] for i in indices], spec)}
    sharp = contenders.get("sharp")
    if isinstance(sharp, SharpContender):
        folder = scratch / "sharp-out"
        folder.mkdir(exist_ok=True)
        await sharp.dump(folder)
        for p, indices in packages.items():
            mine = set(indices)
            outputs = [o for o in sharp.last_outputs if o.svg in mine]
            pairs[p]["sharp"] = sharp_pairs(folder, outputs)
    qualities = {p: {name: quality(v) for name, v in by.items()} for p, by in pairs.items()}
    # The whole set's mean and minimum over every output, not a mean of the packages' means.
    everything: dict[str, list[tuple[bytes, bytes]]] = {}
    for by in pairs.values():
        for name, v in by.items():
            everything.setdefault(name, []).extend(v)
    qualities[""] = {name: quality(v) for name, v in everything.items()}
    return qualities


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--svgs", action="append", help="folder of SVGs, recursive (repeatable)")
    parser.add_argument("--limit", type=int, help="at most N SVGs, evenly spread")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (median reported)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument("--no-sharp", action="store_true", help="skip sharp (no Node needed)")
    parser.add_argument("--sharp-dir", help="a folder where sharp is already npm-installed")
    parser.add_argument("--sharp-version", default=SHARP_VERSION)
    parser.add_argument("--json", help="write the figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    fig = asyncio.run(run_benchmark(args, log=lambda s: print(s, file=sys.stderr, flush=True)))
    print(format_table(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(fig), indent=2) + "\n")
    return 0 if all(t["pass"] for t in fig.targets) else 1


if __name__ == "__main__":
    os.environ.setdefault("INGEST_LOG_LEVEL", "WARNING")
    sys.exit(main())
