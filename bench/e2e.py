"""End to end: the whole stack as processes, side by side with the render core on the same SVGs.

    uv run --frozen python bench/e2e.py                       # 500-image set, then 20 × 25 at once
    uv run --frozen python bench/e2e.py --latency-ms 20       # every AWS request 20 ms later
    uv run --frozen python bench/e2e.py --processors 2 --scenario one
    uv run --frozen python bench/e2e.py --processors 1 2 --scenario one   # scale-out, side by side
    uv run --frozen python bench/e2e.py --processors 1 2 --processor-cpus 0.5   # tasks of ½ CPU
    uv run --frozen python bench/e2e.py --scenario one --profile prof/   # py-spy, every main

What it does, all on real components, in one run:

1. core: the processor's RenderPool (its settings; INGEST_* apply) renders the N SVGs from
   memory: the time and CPU the pipeline is compared against;
2. starts a moto server on loopback (optionally behind a proxy that delays every request by
   --latency-ms, as a real region's round trip would), a throwaway database on DATABASE_URL's
   server, the topology, and the four services as OS processes (--processors of them),
   which export their spans and metrics over OTLP/HTTP to a local receiver, as deployed
   (--no-otlp: no exporter; its CPU, about three points of ingest's own share, left out);
3. one set: uploads an N-image set and waits until it is searchable; the stage times come
   from the timestamps the services write (uploaded → dispatched → completed → indexed);
4. many sets: uploads S sets × P images at once and reports when the first, the median and
   the last became searchable, so starvation shows;
5. counts the AWS requests of each scenario by service and operation (every one the emulator
   answered, the bench's uploads included), per image: AWS bills most of them one by one;
6. with both scenarios, each process's CPU split into a part per image and a part per set
   (what a set costs whatever its size: its ZIP, rows, events, mosaic and index entry), solved
   from the two runs: what the bill grows with, and which of the two a change would cut.

With --profile DIR, py-spy samples each service's main process during each scenario
(collapsed stacks in DIR, one file per process and scenario; open them in speedscope or read
the top frames in each file: `python bench/e2e.py --top DIR/FILE`). py-spy samples the wall
clock; --profile-gil keeps only the samples that hold the GIL, Python's CPU.

For each process it reports CPU seconds per image from /proc: the render workers (every
descendant of a processor, reaped ones included), each service's main process, and the
emulator (which shares these cores with everything; in AWS it is not on ours). "ingest's own"
is the services' main processes together, render workers excluded. With --emulator-cpus N the
emulator and the latency proxy run on the last N CPUs, and everything else (the core, the
services, their render workers, which size themselves from their CPUs) on the rest: AWS's
stand-ins off ingest's CPUs, as in a region, with the core measured on the same CPUs as the
stack.

With --processor-cpus Q each processor runs as a task of Q CPUs' time, as ECS gives a task its
`cpu`: a cgroup of its own with that CPU quota (root and a writable cgroup CPU controller
needed), in which its render workers run too and from which they size themselves (default
settings: `INGEST_RENDER_WORKERS` and `INGEST_CONCURRENCY` follow the quota). The core is
measured in such a task too. So `--processors 1 2 --processor-cpus 0.5` shows what a second
task of the same size adds while the machine has CPUs to spare, at the default settings.

Targets (issue 13; exit status 1 if one fails): ingest's own CPU per image ≤ 25 % of the
render workers'; upload → searchable of the one set ≤ 1.25 × the core's time + 3 s; the
batcher dispatches it in ≤ 3 s; with added latency, the render workers ≥ 90 % busy.

Busy, two ways, over the render window (the first image of the scenario finished → the last).
"busy (CPU time)" is the render workers' CPU; on CPUs they share with the emulator and the
services it is capped by what those leave them. "holding a render (wall)" is the time the
workers held a render, from its start to its result, by the processor's own clock (its
``ingest_render_busy_seconds_total{lane="render"}``, read from its /metrics): the rest of the
window they had nothing to render, which is what added latency would cause. The ≥ 90 % target
is checked on the latter; the gap between the two is CPU the workers waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from ingest_cli.trace import OtlpReceiver
from ingest_cli.upload import upload_set
from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings
from ingest_common.telemetry.tracing import ClientSpanSampler
from ingest_common.topology import apply_topology, load_topology
from ingest_common.upload_status import load_status
from ingest_devstack.local import (
    LOCAL_CREDENTIALS,
    ServiceProcesses,
    local_env,
    moto_server,
    requests_answered,
    scratch_database,
    services,
)
from ingest_processor.pool import RenderPool
from ingest_processor.settings import ProcessorSettings
from latency import delay_proxy
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from procstat import (
    CpuGroup,
    CpuQuotaUnavailable,
    add_emulator_cpus,
    cpu_quota_group,
    cpu_seconds,
    on_cpus,
    own_child,
    process_tree,
    set_emulator_apart,
)
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path("/work/shared/corpus")  # icons the project has never seen, where it exists
SAMPLE = ROOT / "sample"
CONTRIBUTOR = "bench"
TIMEOUT = 900.0
WARM_UP_IMAGES = 8  # the set each stack renders before the measured scenarios
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")


@dataclass
class Cpu:
    """CPU seconds by process group, over one scenario."""

    render_workers: float = 0.0
    services: dict[str, float] = field(default_factory=dict)  # main processes
    emulator: float = 0.0

    @property
    def ingest_own(self) -> float:
        return sum(self.services.values())

    @property
    def ingest(self) -> float:
        """All of ingest's processes: render workers and main processes (not the emulator)."""
        return self.render_workers + self.ingest_own

    @property
    def total(self) -> float:
        """Every process of the stack: ingest's and the emulator."""
        return self.ingest + self.emulator

    @property
    def own_share(self) -> float:
        """ingest's own CPU (the main processes) per CPU-second of the render workers."""
        return self.ingest_own / max(self.render_workers, 1e-9)

    def minus(self, before: Cpu) -> Cpu:
        return Cpu(
            self.render_workers - before.render_workers,
            {k: v - before.services.get(k, 0.0) for k, v in self.services.items()},
            self.emulator - before.emulator,
        )


@dataclass
class Scenario:
    name: str
    images: int
    sets: int
    wall: float  # upload start → last set searchable (seconds)
    searchable: list[float]  # per set, upload start → indexed, sorted
    stages: dict[str, float | None]  # of the first set (the only one, for `one`)
    render_window: float  # seconds from the first image finished to the last
    render_busy: float  # render workers' CPU / (render window × workers)
    # The time the workers held a render / (render window × workers): the rest of the window
    # they waited for work. On CPUs shared with the emulator a render waits for a CPU too,
    # which busy (CPU time) does not count and this does.
    render_held: float
    cpu: Cpu
    traced_calls: int  # sets whose trace kept a span per call (INGEST_TRACE_CLIENT_SPANS)
    # AWS requests the emulator answered, by "<service> <operation>"; a request the services
    # send after the last set is searchable (a delete batch's wait) counts in the next scenario.
    requests: dict[str, int]

    def cpu_busy(self, cores: int, *, emulator: bool = True) -> float:
        """The share of ``cores`` CPUs the stack used (without the emulator's CPU: ingest's
        processes), over the scenario's wall time."""
        return (self.cpu.total if emulator else self.cpu.ingest) / (self.wall * cores)

    def per_image_ms(self) -> dict[str, float]:
        per = {f"{n} main": 1000 * s / self.images for n, s in self.cpu.services.items()}
        return {
            "render workers": 1000 * self.cpu.render_workers / self.images,
            **per,
            "ingest's own (mains)": 1000 * self.cpu.ingest_own / self.images,
            "emulator (moto)": 1000 * self.cpu.emulator / self.images,
        }


def per_image_and_set(one: Scenario, many: Scenario) -> dict[str, tuple[float, float]]:
    """Each process group's CPU split into a part per image and a part per set (ms), solved
    from the two scenarios as cpu = per image × images + per set × sets: the one big set is
    almost all per-image work, the many small sets add the work each set costs whatever its
    size (its ZIP, its rows, its events, its mosaic, its index entry). What differs between
    the runs for another reason (contention, a host that drifts) lands in the per-set part:
    the render workers', which do no per-set work, show how much."""
    if one.images * many.sets == many.images * one.sets:
        raise ValueError("the two scenarios have as many images per set: nothing to tell apart")

    def groups(result: Scenario) -> dict[str, float]:
        return {k: v * result.images for k, v in result.per_image_ms().items()}

    split: dict[str, tuple[float, float]] = {}
    few, lots = groups(one), groups(many)
    for name, total in few.items():
        # Two equations, per image a and per set b: a·i1 + b·s1 = c1, a·i2 + b·s2 = c2.
        a = (total * many.sets - lots[name] * one.sets) / (
            one.images * many.sets - many.images * one.sets
        )
        split[name] = (a, (total - a * one.images) / one.sets)
    return split


def report_split(one: Scenario, many: Scenario) -> dict[str, tuple[float, float]]:
    try:
        split = per_image_and_set(one, many)
    except ValueError as exc:  # e.g. --images 25 --per-set 25
        print(f"\nno split per image and per set: {exc}")
        return {}
    per_set_images = many.images / many.sets
    print(
        "\nCPU per image and per set (ms), from the two scenarios (CPU = per image × images"
        " + per set × sets):"
    )
    print(f"    {'':<24} {'per image':>9} {'per set':>9}")
    for name, (image, one_set) in split.items():
        print(f"    {name:<24} {image:9.1f} {one_set:9.1f}")
    image, one_set = split["ingest's own (mains)"]
    workers = split["render workers"][0]
    print(
        f"  at {per_set_images:.0f} images per set, the mains' per-set work is "
        f"{one_set / per_set_images:.1f} ms per image ({one_set / per_set_images / workers:.0%} "
        f"of the render workers' CPU), their per-image work {image:.1f} ms "
        f"({image / workers:.0%})"
    )
    return split


@dataclass
class Core:
    seconds: float
    cpu_per_image: float


# --- the SVGs and the sets --------------------------------------------------------------------


def load_svgs(dirs: Sequence[Path], count: int) -> list[tuple[str, bytes]]:
    """``count`` SVGs as (unique file name, bytes), evenly drawn from ``dirs`` (repeated if
    there are fewer, under other names: the renders cost the same)."""
    paths = sorted(p for d in dirs for p in d.rglob("*.svg") if p.is_file())
    if not paths:
        raise SystemExit(f"no SVGs under {', '.join(map(str, dirs))}")
    if count < len(paths):
        paths = [paths[i * len(paths) // count] for i in range(count)]
    picked = [paths[i % len(paths)] for i in range(count)]
    return [(f"{i:04d}-{p.parent.name}-{p.name}", p.read_bytes()) for i, p in enumerate(picked)]


def write_set(folder: Path, svgs: Sequence[tuple[str, bytes]], title: str, family: str) -> Path:
    folder.mkdir(parents=True)
    for name, data in svgs:
        (folder / name).write_bytes(data)
    manifest = {
        "schema_version": 1,
        "product_type": "icon_set",
        "family": family,
        "family_name": family.replace("-", " ").title(),
        "title": title,
        "description": f"{len(svgs)} icons for the end-to-end benchmark.",
        "tags": ["benchmark"],
        "license": "mit",
        "files": [
            {"path": name, "title": Path(name).stem.replace("-", " "), "tags": ["icon"]}
            for name, _ in svgs
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


# --- measuring ------------------------------------------------------------------------------


def tree_cpu(pid: int) -> tuple[float, float]:
    """(the process's own CPU, its descendants' CPU including reaped ones)."""
    own = cpu_seconds([pid])
    everything = cpu_seconds([pid], children=True) + cpu_seconds(
        process_tree(pid)[1:], children=True
    )
    return own, everything - own


# Seconds a lane's render workers held a render (ingest.render.busy), and the lane measured.
RENDER_BUSY = "ingest_render_busy_seconds_total"
LANE = "render"


def held_seconds(stacks: Sequence[ServiceProcesses]) -> float:
    """Seconds the processors' render workers held a render, from each processor's /metrics."""
    total = 0.0
    for stack in stacks:
        url = f"http://127.0.0.1:{stack.health_ports['processor']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            total += held_seconds_in(response.read().decode())
    return total


def held_seconds_in(metrics: str) -> float:
    """The render lane's busy seconds in Prometheus text (0 before its first render)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == RENDER_BUSY and sample.labels.get("lane") == LANE
    )


def read_cpu(stacks: Sequence[ServiceProcesses], moto: int) -> Cpu:
    cpu = Cpu(emulator=cpu_seconds(process_tree(moto), children=True))
    for stack in stacks:
        for name, process in stack.processes.items():
            own, descendants = tree_cpu(process.pid)
            cpu.services[name] = cpu.services.get(name, 0.0) + own
            if name == "processor":
                cpu.render_workers += descendants
    return cpu


async def core_time(settings: ProcessorSettings, svgs: Sequence[bytes]) -> Core:
    """The render core alone: the same SVGs from memory through the processor's pool."""
    async with RenderPool(
        settings.render_workers, settings.render_spec(), settings.render_timeout
    ) as pool:
        await asyncio.gather(*(pool.render(svgs[i]) for i in range(settings.render_workers)))
        before = cpu_seconds([os.getpid()]) + cpu_seconds(pool.worker_pids(), children=True)
        started = time.monotonic()
        await asyncio.gather(*(pool.render(svg) for svg in svgs))
        seconds = time.monotonic() - started
        cpu = cpu_seconds([os.getpid()]) + cpu_seconds(pool.worker_pids(), children=True) - before
    return Core(seconds, cpu / len(svgs))


async def run_scenario(
    name: str,
    aws: Aws,
    dsn: str,
    folders: Sequence[Path],
    stacks: Sequence[ServiceProcesses],
    moto: int,
    workers: int,
    profile: Profile | None,
    client_spans: float,
) -> Scenario:
    images = sum(len(list(f.glob("*.svg"))) for f in folders)
    profiling = profilers(stacks, profile, name)
    cpu_before = read_cpu(stacks, moto)
    held_before = held_seconds(stacks)
    endpoint = str(aws.settings.aws_endpoint_url)  # the emulator's own, not the proxy's
    requests_before = requests_answered(endpoint)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    uploads = await asyncio.gather(*(upload_set(aws, f, CONTRIBUTOR) for f in folders))
    connection = await asyncpg.connect(dsn)
    try:
        statuses: dict[Any, Any] = {}
        while len(statuses) < len(uploads):
            if time.monotonic() - started > TIMEOUT:
                raise SystemExit(f"{name}: not searchable within {TIMEOUT:.0f} s")
            for uploaded in uploads:
                if uploaded.upload_id in statuses:
                    continue
                status = await load_status(connection, uploaded.upload_id)
                if status is not None and status.finished:
                    if status.product is None or status.product["indexed_at"] is None:
                        raise SystemExit(f"{name}: upload {uploaded.upload_id} was refused")
                    statuses[uploaded.upload_id] = status
            await asyncio.sleep(0.1)
        window = await connection.fetchrow(
            "SELECT min(finished_at) AS first, max(finished_at) AS last FROM images"
            " WHERE finished_at >= $1",
            started_at,
        )
    finally:
        await connection.close()
    if window is None or window["first"] is None:
        raise SystemExit(f"{name}: no image finished")
    wall = time.monotonic() - started
    cpu = read_cpu(stacks, moto).minus(cpu_before)
    held = held_seconds(stacks) - held_before
    requests = {
        name: count - requests_before.get(name, 0)
        for name, count in requests_answered(endpoint).items()
        if count > requests_before.get(name, 0) and name != "moto-api"
    }
    for recording in profiling:
        recording.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        recording.wait(30)
    done = list(statuses.values())
    searchable = sorted((s.product["indexed_at"] - started_at).total_seconds() for s in done)
    first = statuses[uploads[0].upload_id]
    stages = _stages(first.upload, first.product)
    # The render window: first image finished → last. Rendering starts before the batcher
    # stamps a set dispatched (its messages go out in batches), so the dispatched → completed
    # stage would leave out renders it counts. What ran before the first finish, about one
    # render per worker, is taken off both figures, so that they can only read low.
    render_seconds = (window["last"] - window["first"]).total_seconds()
    worker_seconds = render_seconds * workers
    before_window = workers / images
    busy = cpu.render_workers * (1 - before_window) / worker_seconds if worker_seconds else 0.0
    held_share = held * (1 - before_window) / worker_seconds if worker_seconds else 0.0
    calls = ClientSpanSampler(client_spans, ALWAYS_ON)
    traced = sum(calls.keeps_calls(int(s.upload["trace_id"], 16)) for s in done)
    return Scenario(
        name,
        images,
        len(folders),
        wall,
        searchable,
        stages,
        render_seconds,
        busy,
        held_share,
        cpu,
        traced,
        requests,
    )


@dataclass(frozen=True)
class Profile:
    folder: Path
    # Only samples that hold the GIL: Python's CPU. Without it py-spy samples the wall clock,
    # where a main thread waiting for the GIL (behind the batcher's extraction threads, say)
    # reads as the call it waits in.
    gil: bool = False


def profilers(
    stacks: Sequence[ServiceProcesses], profile: Profile | None, scenario: str
) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each service's main process (not the render workers) until SIGINT."""
    if profile is None:
        return []
    profile.folder.mkdir(parents=True, exist_ok=True)
    recordings = []
    for k, stack in enumerate(stacks):
        for name, process in stack.processes.items():
            out = profile.folder / f"{scenario.replace(' ', '-')}-{name}-{k}.txt"
            recordings.append(
                subprocess.Popen(
                    [PY_SPY, "record", "--pid", str(process.pid), "--format", "raw",
                     "--rate", "200", "--nonblocking", "--output", str(out),
                     *(["--gil"] if profile.gil else [])],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
    time.sleep(1.0)  # py-spy attaches before the first upload
    return recordings


def top_frames(path: Path, count: int = 12) -> list[tuple[str, float]]:
    """The functions with the most samples anywhere on the stack (inclusive), as shares."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        total += int(samples)
        for frame in set(stack.split(";")):
            inclusive[frame] = inclusive.get(frame, 0) + int(samples)
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    return [(frame, n / total) for frame, n in ranked[:count]] if total else []


def _stages(upload: dict[str, Any], product: dict[str, Any]) -> dict[str, float | None]:
    def between(start: datetime | None, end: datetime | None) -> float | None:
        return (end - start).total_seconds() if start and end else None

    return {
        "batcher: ZIP → rows → render messages": between(
            upload["uploaded_at"], upload["dispatched_at"]
        ),
        "processor: every image rendered": between(
            upload["dispatched_at"], product["completed_at"]
        ),
        "previewer + indexer: searchable": between(product["completed_at"], product["indexed_at"]),
        "total: upload → searchable": between(upload["uploaded_at"], product["indexed_at"]),
    }


# --- the run --------------------------------------------------------------------------------


@contextmanager
def stack(
    args: argparse.Namespace,
    processors: int,
    endpoint: str,
    dsn: str,
    logs: Path,
    telemetry: dict[str, str],
    tasks: Sequence[CpuGroup | None],
) -> Iterator[list[ServiceProcesses]]:
    """The services, processor k in ``tasks[k]`` (none: where this process is)."""
    env = local_env(endpoint, dsn, log_format="json", stall_timeout="900", **dict(args.set))
    env.update(telemetry)

    def placement(k: int) -> Callable[[str], AbstractContextManager[object]]:
        return lambda name: in_task(tasks[k] if name == "processor" else None)

    with ExitStack() as exits:
        first = exits.enter_context(services(env, logs / "stack-0", placement=placement(0)))
        stacks = [first]
        for k in range(1, processors):
            stacks.append(
                exits.enter_context(
                    services(env, logs / f"stack-{k}", ("processor",), placement=placement(k))
                )
            )
        yield stacks


def in_task(task: CpuGroup | None) -> AbstractContextManager[object]:
    """Within: this process in ``task`` (none: where it is), and what it starts meanwhile."""
    return task.joined() if task is not None else nullcontext()


@contextmanager
def processor_task(args: argparse.Namespace, name: str) -> Iterator[CpuGroup | None]:
    """A cgroup of --processor-cpus CPUs' time for a processor (or the core), if asked for."""
    if args.processor_cpus is None:
        yield None
        return
    try:
        with cpu_quota_group(f"ingest-e2e-{os.getpid()}-{name}", args.processor_cpus) as group:
            yield group
    except CpuQuotaUnavailable as exc:
        raise SystemExit(f"--processor-cpus: {exc}") from None


async def bench(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    # Before anything reads the CPU count: the core, the services and their render workers
    # (sized from their CPUs by default) get the rest; the emulator gets its own.
    emulator_cpus = set_emulator_apart(args.emulator_cpus)
    stack_cpus = os.sched_getaffinity(0)
    count = args.images if "one" in args.scenario else args.sets * args.per_set
    svgs = load_svgs(args.svgs, max(count, args.sets * args.per_set))
    distinct = len({data for _, data in svgs})
    client_spans = float(
        dict(args.set).get(
            "trace_client_spans", ProcessorSettings.model_fields["trace_client_spans"].default
        )
    )
    # With --processor-cpus the core renders in a task of that size too, and the settings
    # read in one are a processor's defaults there.
    with processor_task(args, "core") as core_task, in_task(core_task):
        settings = ProcessorSettings()
        workers = int(dict(args.set).get("render_workers", settings.render_workers))
        print(
            f"e2e: {args.images}-image set and {args.sets} × {args.per_set} sets, {distinct} "
            f"distinct SVGs from {', '.join(map(str, args.svgs))}; "
            f"{' then '.join(map(str, args.processors))} processor(s) × {workers} "
            f"render workers on {len(stack_cpus)} CPUs"
            + (f" (the emulator on {len(emulator_cpus)} of its own)" if emulator_cpus else "")
            + (
                f", each processor a task of {args.processor_cpus:g} CPUs' time"
                if core_task
                else ""
            )
            + "; "
            f"{len(settings.render_widths)} widths × {len(settings.render_formats)} formats; "
            f"AWS latency {args.latency_ms:g} ms per request; {client_spans:.0%} of uploads "
            "traced with a span per call (INGEST_TRACE_CLIENT_SPANS); "
            + ("spans and metrics exported over OTLP/HTTP" if args.otlp else "no OTLP export")
            + "".join(f"; INGEST_{name.upper()}={value}" for name, value in args.set)
        )
        core = await core_time(settings, [data for _, data in svgs[: args.images]])
    print(
        f"core: {args.images} SVGs in {core.seconds:.2f} s ({args.images / core.seconds:.1f}/s), "
        f"{1000 * core.cpu_per_image:.1f} ms CPU per SVG"
    )
    os.environ.update(LOCAL_CREDENTIALS)
    runs: dict[int, list[Scenario]] = {}
    for processors in args.processors:
        if len(args.processors) > 1:
            print(f"\n=== {processors} processor(s)")
        runs[processors] = await run_stack(
            args,
            processors,
            workers,
            svgs,
            scratch / f"processors-{processors}",
            client_spans,
            emulator_cpus,
        )
        for result in runs[processors]:
            report(result, core, workers * processors, len(emulator_cpus))
    results = runs[args.processors[0]]
    split: dict[str, tuple[float, float]] = {}
    if len(results) == 2:
        one, many = results  # run_stack runs them in this order
        split = report_split(one, many)
    failures = targets(args, results, core)
    failures += scale_out(args, runs)
    return {
        "core": asdict(core),
        "scenarios": [asdict(r) for r in results],  # the first processor count's
        "more_processors": {n: [asdict(r) for r in rs] for n, rs in list(runs.items())[1:]},
        "per_image_and_set_ms": split,
        "latency_ms": args.latency_ms,
        "processors": args.processors,
        "failures": failures,
    }


async def run_stack(
    args: argparse.Namespace,
    processors: int,
    workers: int,
    svgs: list[tuple[str, bytes]],
    scratch: Path,
    client_spans: float,
    emulator_cpus: set[int],
) -> list[Scenario]:
    """The scenarios on a stack of their own: a fresh emulator, database and services."""
    results: list[Scenario] = []
    profile = None if args.profile is None else Profile(args.profile, args.profile_gil)
    server = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    scratch.mkdir(parents=True, exist_ok=True)
    async with scratch_database(server, "ingest_bench_e2e") as dsn:
        with ExitStack() as exits:
            # The emulator and the proxy, AWS's stand-ins, on their CPUs (if apart).
            with on_cpus(emulator_cpus):
                direct = exits.enter_context(moto_server(scratch / "moto.log"))
                endpoint = direct
                if args.latency_ms > 0:
                    endpoint = exits.enter_context(delay_proxy(direct, args.latency_ms / 1000))
                # Every service exports its spans and metrics over OTLP, as deployed (deploy/:
                # a collector beside each task): the exporters' CPU is ingest's own. The
                # receiver stands in for the collector, like moto for AWS, on these CPUs.
                telemetry: dict[str, str] = {}
                if args.otlp:
                    receiver = exits.enter_context(OtlpReceiver(scratch / "spans.jsonl"))
                    telemetry = receiver.env(schedule_delay_ms=None)
            moto = own_child("ingest_devstack.moto_app")
            if moto is None:
                raise SystemExit("no moto server among this process's children")
            client = IngestSettings(aws_endpoint_url=direct, database_url=dsn)
            # Each processor's task (--processor-cpus), removed once the services have stopped.
            tasks = [
                exits.enter_context(processor_task(args, f"processor-{k}"))
                for k in range(processors)
            ]
            async with Aws(client) as aws:
                await apply_topology(aws, load_topology(client))
                stacks = exits.enter_context(
                    stack(args, processors, endpoint, dsn, scratch / "logs", telemetry, tasks)
                )
                all_workers = workers * processors
                await warm_up(scratch, svgs, aws, dsn, stacks, moto, all_workers, client_spans)
                scenarios: list[tuple[str, list[Path]]] = []
                if "one" in args.scenario:
                    one = write_set(scratch / "one", svgs[: args.images], "One big set", "one")
                    scenarios.append(("one set", [one]))
                if "many" in args.scenario:
                    many = [
                        write_set(
                            scratch / f"many-{k}",
                            svgs[k * args.per_set : (k + 1) * args.per_set],
                            f"Set {k}",
                            f"family-{k}",
                        )
                        for k in range(args.sets)
                    ]
                    scenarios.append(("many sets", many))
                for name, folders in scenarios:
                    results.append(
                        await run_scenario(
                            name,
                            aws,
                            dsn,
                            folders,
                            stacks,
                            moto,
                            all_workers,
                            profile,
                            client_spans,
                        )
                    )
    return results


async def warm_up(
    scratch: Path,
    svgs: Sequence[tuple[str, bytes]],
    aws: Aws,
    dsn: str,
    stacks: Sequence[ServiceProcesses],
    moto: int,
    workers: int,
    client_spans: float,
) -> None:
    """A small set through the whole stack first, not measured: what a service does once
    (its clients' connection pools and TLS contexts, first imports, caches) is not a cost per
    image, and would otherwise land on whichever scenario runs first."""
    # Other bytes than the scenarios' SVGs (a comment at the end), so nothing they render
    # could come from the warm-up's work; the same cost to render.
    warm = [(name, data + b"\n<!-- warm-up -->\n") for name, data in svgs[:WARM_UP_IMAGES]]
    folder = write_set(scratch / "warm-up", warm, "Warm-up", "warm-up")
    result = await run_scenario(
        "warm-up", aws, dsn, [folder], stacks, moto, workers, None, client_spans
    )
    print(
        f"warm-up: a {result.images}-image set searchable in {result.wall:.2f} s "
        "(not in the figures below)"
    )


def scale_out(args: argparse.Namespace, runs: dict[int, list[Scenario]]) -> list[str]:
    """Target 4's second half: a second processor's gain, judged only where the first left
    CPUs free (at least half of them idle), since a processor cannot add CPUs the machine
    does not have."""
    if len(runs) < 2:
        return []
    (few, before), (more, after) = sorted(runs.items())[:2]
    cores = len(os.sched_getaffinity(0))  # the stack's: the bench runs on them
    shared = args.emulator_cpus == 0  # the emulator on the same CPUs
    failures: list[str] = []
    print(f"\nscale-out, {few} → {more} processors (same SVGs, each on a stack of its own):")
    for first, second in zip(before, after, strict=True):
        gain = first.render_window / max(second.render_window, 1e-9)
        busy = first.cpu_busy(cores, emulator=shared)
        print(
            f"  {first.name}: render window {first.render_window:.2f} → "
            f"{second.render_window:.2f} s, {gain:.2f}×; CPUs busy {busy:.0%} → "
            f"{second.cpu_busy(cores, emulator=shared):.0%}"
        )
        name = f"{first.name}: {few} → {more} processors, render window gain"
        wanted = 0.85 * more / few  # 1 → 2: the 1.7×
        if busy > 0.5:
            print(f"NOTE  {name}: not judged, {busy:.0%} of the CPUs were busy with {few}")
        elif gain >= wanted:
            print(f"PASS  {name}: {gain:.2f} (target ≥ {wanted:.2f})")
        else:
            print(f"FAIL  {name}: {gain:.2f} (target ≥ {wanted:.2f})")
            failures.append(name)
    return failures


def report(result: Scenario, core: Core, workers: int, emulator_cpu_count: int) -> None:
    print(f"\n{result.name}: {result.sets} set(s), {result.images} images")
    if result.sets == 1:
        for stage, seconds in result.stages.items():
            print(f"  {stage:<40} {'-' if seconds is None else f'{seconds:6.2f} s'}")
    else:
        s = result.searchable
        print(
            f"  searchable after: first {s[0]:.2f} s, median {statistics.median(s):.2f} s, "
            f"last {s[-1]:.2f} s"
        )
    print(f"  wall (bench's view, upload → all searchable): {result.wall:.2f} s")
    print(
        f"  render workers ({workers}) from the first image finished to the last "
        f"({result.render_window:.2f} s): busy (CPU time) "
        f"{result.render_busy:.0%}, holding a render (wall) {result.render_held:.0%}"
    )
    print(
        f"  traces with a span per S3, SQS and SQL call: {result.traced_calls} of {result.sets}"
        " set(s) (the rest keep their messaging and render spans)"
    )
    cores = len(os.sched_getaffinity(0))  # the stack's: the bench runs on them
    used, ours = result.cpu.total, result.cpu.ingest
    if emulator_cpu_count:
        print(
            f"  the stack's {cores} CPU(s) were {result.cpu_busy(cores, emulator=False):.0%} "
            f"busy with ingest (render workers, main processes); the emulator's own "
            f"{emulator_cpu_count}: {result.cpu.emulator / (result.wall * emulator_cpu_count):.0%}"
        )
        print(f"  CPU floor on the stack's {cores} CPU(s): {ours / cores:.2f} s")
    else:
        print(
            f"  the machine's {cores} CPUs were {result.cpu_busy(cores):.0%} busy with the "
            "stack (render workers, main processes, emulator)"
        )
        # The shortest this scenario could take here, every CPU-second of it spread perfectly
        # over these CPUs; and without the emulator's, which in AWS is not on ours.
        print(
            f"  CPU floor on {cores} CPUs: {used / cores:.2f} s; without the emulator's CPU "
            f"{ours / cores:.2f} s"
        )
    print("  CPU per image (ms):")
    for name, ms in result.per_image_ms().items():
        print(f"    {name:<24} {ms:7.1f}")
    print(
        f"  ingest's own / render workers: {result.cpu.own_share:.0%}; render core alone "
        f"{1000 * core.cpu_per_image:.1f} ms per SVG"
    )
    total = sum(result.requests.values())
    print(
        f"  AWS requests per image: {total / result.images:.2f} (the bench's uploads included),"
        " by operation:"
    )
    ranked = sorted(result.requests.items(), key=lambda item: -item[1])
    for row in range(0, len(ranked), 3):
        print(
            "    "
            + "  ".join(
                f"{name:<28} {count / result.images:5.2f}" for name, count in ranked[row : row + 3]
            )
        )
    # Whichever process does it (the render workers store their renditions too), all of
    # ingest's CPU per image against the core's: what moving work between processes cannot hide.
    ingest_ms = 1000 * result.cpu.ingest / result.images
    print(
        f"  all of ingest (mains + render workers): {ingest_ms:.1f} ms per image, "
        f"{ingest_ms / max(1000 * core.cpu_per_image, 1e-9):.2f}× the render core's; "
        f"{vcpu_hours_per_million(ingest_ms):.1f} vCPU-hours per million images, the CPU side "
        "of the bill (tasks busy; idle capacity and memory not included)"
    )


def vcpu_hours_per_million(ms_per_image: float) -> float:
    """CPU-hours that a million images take at ``ms_per_image`` of CPU each."""
    return ms_per_image * 1e6 / 1000 / 3600


def targets(args: argparse.Namespace, results: Sequence[Scenario], core: Core) -> list[str]:
    failures: list[str] = []
    print()

    def check(name: str, value: float, target: float, *, at_most: bool) -> None:
        ok = value <= target if at_most else value >= target
        relation = "≤" if at_most else "≥"
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.2f} (target {relation} {target:.2f})")
        if not ok:
            failures.append(name)

    for result in results:
        own = result.cpu.own_share
        check(f"{result.name}: ingest's own CPU / render workers'", own, 0.25, at_most=True)
        if args.latency_ms > 0 and result.sets == 1:
            # Busy as in "holding a render": not starved by the round trips around it. Their
            # CPU-time share is printed above; here it is capped by the CPUs they share.
            check(
                f"{result.name}: render workers holding a render (wall)",
                result.render_held,
                0.90,
                at_most=False,
            )
    one = next((r for r in results if r.name == "one set"), None)
    if one is not None:
        total = one.stages["total: upload → searchable"]
        if total is not None:
            bound = 1.25 * core.seconds + 3
            check("one set: upload → searchable, s", total, bound, at_most=True)
            if not args.emulator_cpus:
                print(
                    "NOTE  the emulator shared the stack's CPUs (see its CPU above); "
                    "--emulator-cpus 1 reads this figure with it apart, as in AWS"
                )
        dispatch = one.stages["batcher: ZIP → rows → render messages"]
        if dispatch is not None:
            check("one set: batcher dispatch, s", dispatch, 3.0, at_most=True)
    return failures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = [CORPUS] if CORPUS.is_dir() else [SAMPLE]
    parser.add_argument("--svgs", type=Path, nargs="+", default=default)
    parser.add_argument("--images", type=int, default=500, help="images in the one big set")
    parser.add_argument("--sets", type=int, default=20, help="sets uploaded at once")
    parser.add_argument("--per-set", type=int, default=25, help="images in each of those sets")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to each AWS request")
    parser.add_argument(
        "--processors",
        type=int,
        nargs="+",
        default=[1],
        help="processors; several (e.g. 1 2): each on a fresh stack, and the gain between them",
    )
    add_emulator_cpus(parser)
    parser.add_argument(
        "--processor-cpus",
        type=positive_float,
        metavar="Q",
        help="run each processor (and the core) as a task of Q CPUs' time, as ECS gives a task"
        " its cpu: a cgroup CPU quota, which its default settings follow (needs root)",
    )
    parser.add_argument("--scenario", nargs="+", choices=("one", "many"), default=["one", "many"])
    parser.add_argument(
        "--otlp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export spans and metrics over OTLP/HTTP to a local receiver, as deployed "
        "(default); --no-otlp: no exporter, its CPU left out",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", type=Path, help="keep the logs and sets in this folder")
    parser.add_argument("--profile", type=Path, help="py-spy every main process into this folder")
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: only samples holding the GIL (Python's CPU), not the wall clock",
    )
    parser.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of every service (INGEST_NAME), e.g. --set concurrency=16",
    )
    return parser.parse_args(argv)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name.lower().removeprefix("ingest_"), value


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--top":
        for frame, share in top_frames(Path(sys.argv[2]), 40):
            print(f"{share:6.1%}  {frame}")
        return 0
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ingest-e2e-") as tmp:
        scratch = args.keep or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        figures = asyncio.run(bench(args, scratch))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
