"""Benchmark `ingest backfill` against the render core it feeds, and its resumability.

    uv run python bench/backfill.py                 # 500 images, all CPUs, kill at 30 %
    uv run python bench/backfill.py --images 5000 --workers 2

What it does, all on real components:

1. starts a moto server on loopback and a throwaway database on the local PostgreSQL
   (DATABASE_URL's server; dropped at the end), migrates it and bootstraps the topology;
2. uploads N originals (the sample sets' SVGs, repeated under distinct keys) and inserts
   contributor, family, product and ``ready`` image rows with no renditions;
3. core: the processor's RenderPool renders the same N SVGs from memory (no S3, no DB), all
   renditions and WebP alone in alternated rounds, and each once more right after its
   backfill below: the figure compared is the mean of those rounds, around the backfill;
4. backfill: ``ShardedBackfill(--all)`` over the N rows, the same render workers spread over
   ``--shards`` processes (default one per worker); prints SVGs/s, renditions/s, the ratio
   backfill / core (wall clock, and SVGs per CPU-second of ingest's own processes), and the
   CPU per image of the render workers, of the shard processes (S3 client, SQL) and of the
   emulator (which shares the machine with them, unlike S3 in AWS);
   then the same for WebP alone (core and backfill), and from those measured CPU costs per
   image the wall time of 650,000 SVGs on 16 CPUs, WebP only and all renditions, with its
   assumptions; then a width is added to the configuration and ``--missing-width`` backfills
   just it;
5. resumability: with another render profile (so every image is stale again), runs
   ``ingest backfill --all`` as a separate process, SIGKILLs it once ~30 % of the rows are
   written, reruns it, and counts images rendered twice (renditions already in S3 at the kill
   for rows not written yet) against the bound (images in flight, over all shards).

With --emulator-cpus N, moto runs on the last N CPUs and everything else (the core, the shards
and their render workers) on the rest: S3's stand-in off ingest's CPUs, as in AWS.

Exit status 1 if a target of issue 13 fails: SVGs per CPU-second at least 0.85 of the core's
(``--target-ratio``), a projected WebP-only run under 20 minutes (``--target-minutes``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from ingest_cli.backfill import summary
from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.topology import apply_topology, load_topology
from ingest_devstack.local import LOCAL_CREDENTIALS, moto_server, scratch_database
from ingest_processor.backfill import (
    BackfillSettings,
    BackfillStats,
    Selection,
    ShardedBackfill,
    default_shards,
)
from ingest_processor.backfill.pipeline import in_flight_for
from ingest_processor.backfill.selection import Shard
from ingest_processor.backfill.shards import shard_settings
from ingest_processor.backfill.stats import own_cpu, reaped_children_cpu
from ingest_processor.pool import RenderPool
from ingest_processor.renditions import render_profile
from procstat import (
    add_emulator_cpus,
    cpu_seconds,
    on_cpus,
    own_child,
    process_tree,
    set_emulator_apart,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
IMAGES_PER_PRODUCT = 100
CATALOGUE = 650_000  # the original system's run: SVGs re-rendered to WebP
MACHINE_CPUS = 16


def svgs() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLE.glob("*/*.svg"))]


async def upload_originals(aws: Aws, bucket: str, corpus: list[bytes], count: int) -> list[str]:
    keys = [f"originals/bench/{i:07d}.svg" for i in range(count)]
    await asyncio.gather(
        *(
            aws.put_bytes(bucket, key, corpus[i % len(corpus)], content_type="image/svg+xml")
            for i, key in enumerate(keys)
        )
    )
    return keys


async def insert_rows(db: asyncpg.Pool, corpus: list[bytes], keys: list[str]) -> None:
    async with db.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO contributors (id) VALUES ('bench')")
        family = uuid.uuid4()
        await connection.execute(
            "INSERT INTO families (id, slug, name, contributor_id) "
            "VALUES ($1, 'bench', 'Bench', 'bench')",
            family,
        )
        images = []
        for start in range(0, len(keys), IMAGES_PER_PRODUCT):
            chunk = keys[start : start + IMAGES_PER_PRODUCT]
            upload, product = uuid.uuid4(), uuid.uuid4()
            await connection.execute(
                "INSERT INTO uploads (id, bucket, object_key, etag, contributor_id, status) "
                "VALUES ($1, 'bench', $2, 'bench', 'bench', 'ready')",
                upload,
                f"uploads/bench/{upload}.zip",
            )
            await connection.execute(
                "INSERT INTO products (id, upload_id, current_upload_id, bucket, object_key, "
                "family_id, contributor_id, product_type, title, license, status, image_count, "
                "images_ready, completed_at) "
                "VALUES ($1, $2, $2, 'bench', $5, $3, 'bench', 'icon_set', 'Bench', 'standard', "
                "'ready', $4, $4, now())",
                product,
                upload,
                family,
                len(chunk),
                f"uploads/bench/{upload}.zip",
            )
            for position, key in enumerate(chunk, start):
                svg = corpus[position % len(corpus)]
                images.append(
                    (
                        uuid.uuid4(),
                        product,
                        position,
                        key,
                        hashlib.sha256(svg + key.encode()).hexdigest(),
                        len(svg),
                    )
                )
        await connection.executemany(
            "INSERT INTO images (id, product_id, position, path, title, content_hash, byte_size, "
            "original_key, status, finished_at) "
            "VALUES ($1, $2, $3, $4, $4, $5, $6, $4, 'ready', now())",
            images,
        )


@dataclass(frozen=True)
class Core:
    rate: float  # SVGs/s
    cpu_per_image: float  # seconds of CPU, render workers and this process together


async def core_throughput(settings: BackfillSettings, corpus: list[bytes], count: int) -> Core:
    """The render core alone: the same SVGs from memory through the same pool size."""
    async with RenderPool(
        settings.render_workers, settings.render_spec(), settings.render_timeout
    ) as pool:
        # Warm up each worker once (imports, libvips caches), as the backfill's pool is.
        await asyncio.gather(*(pool.render(corpus[i]) for i in range(settings.render_workers)))
        cpu_before = own_cpu() + cpu_seconds(pool.worker_pids(), children=True)
        started = time.monotonic()
        await asyncio.gather(*(pool.render(corpus[i % len(corpus)]) for i in range(count)))
        elapsed = time.monotonic() - started
        cpu = own_cpu() + cpu_seconds(pool.worker_pids(), children=True) - cpu_before
        return Core(count / elapsed, cpu / count)


async def written(db: asyncpg.Pool, profile: str) -> int:
    value = await db.fetchval(
        "SELECT count(*) FROM images WHERE renditions @> $1::jsonb",
        [{"profile": profile}],
    )
    return int(value)


async def rendition_prefixes(aws: Aws, bucket: str, profile: str) -> set[str]:
    """Image ids with at least one rendition of ``profile`` in S3."""
    found: set[str] = set()
    paginator = aws.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix="renditions/"):
        for item in page.get("Contents", []):
            _, image, key_profile, _ = item["Key"].split("/", 3)
            if key_profile == profile:
                found.add(image)
    return found


@dataclass(frozen=True)
class Run:
    """One sharded backfill, and the CPU it took per image."""

    stats: BackfillStats
    render: float  # seconds of CPU per image: render workers
    client: float  # the shards' own processes (S3 client, SQL, pickling)
    whole: float  # every shard process and worker, start-up and shutdown included
    moto: float

    @property
    def own(self) -> float:
        return self.render + self.client


async def sharded_run(
    settings: BackfillSettings, selection: Selection, shards: int, moto_pids: list[int]
) -> Run:
    moto_before = cpu_seconds(moto_pids)
    # The shards are this process's children: once joined, all their CPU is in RUSAGE_CHILDREN.
    children_before = reaped_children_cpu()
    stats = await ShardedBackfill(settings, selection, shards).run()
    whole = reaped_children_cpu() - children_before
    images = max(stats.rendered, 1)
    return Run(
        stats,
        stats.cpu_render / images,
        stats.cpu_client / images,
        whole / images,
        (cpu_seconds(moto_pids) - moto_before) / images,
    )


def projection(name: str, core: Core, run: Run) -> float:
    """Seconds of a CATALOGUE run on MACHINE_CPUS cores, from measured CPU per image."""
    # CPU-bound: every core busy. With one shard per render worker, a shard's event loop
    # carries client / (render + client) of a CPU, under one; in a single process (no
    # shards) that one loop would carry every image's client work and set the pace.
    seconds = CATALOGUE * run.own / MACHINE_CPUS
    one_process = max(seconds, CATALOGUE * run.client)
    print(
        f"projection, {name}: {CATALOGUE:,} SVGs × ({1000 * run.render:.1f} ms render + "
        f"{1000 * run.client:.1f} ms client) / {MACHINE_CPUS} CPUs = {seconds / 60:.1f} min "
        f"(render core alone {CATALOGUE * core.cpu_per_image / MACHINE_CPUS / 60:.1f} min; "
        f"in one process, its event loop at one CPU: {one_process / 60:.1f} min)"
    )
    return seconds


async def bench(args: argparse.Namespace, endpoint: str, dsn: str) -> None:
    settings = BackfillSettings(
        database_url=dsn,
        aws_endpoint_url=endpoint,
        **({"render_workers": args.workers} if args.workers else {}),
    )
    workers = settings.render_workers
    shards = args.shards or default_shards(settings)
    corpus = svgs()
    moto = own_child("ingest_devstack.moto_app")
    if moto is None:
        raise SystemExit("no moto server among this process's children: its CPU would read 0")
    moto_pids = process_tree(moto)  # gunicorn's master and its worker
    print(
        f"bench: {args.images} images ({len(corpus)} distinct sample SVGs), {workers} render "
        f"workers in {shards} shard processes on {len(os.sched_getaffinity(0))} CPUs"
        + (f" (the emulator on {args.emulator_cpus} of its own)" if args.emulator_cpus else "")
        + ", "
        f"{len(settings.render_widths)} widths × {len(settings.render_formats)} formats, "
        f"S3 {settings.s3_concurrency} at once per shard, pages of {settings.backfill_batch_size}"
    )
    db = await create_pool(settings)
    try:
        async with Aws(settings) as aws:
            await apply_topology(aws, load_topology(settings))
            started = time.monotonic()
            keys = await upload_originals(aws, settings.uploads_bucket, corpus, args.images)
            await insert_rows(db, corpus, keys)
            print(f"setup: originals and rows in {time.monotonic() - started:.1f} s")

            webp = webp_settings(settings)
            rounds = await core_rounds(settings, webp, corpus, args.images, args.core_rounds)
            run = await sharded_run(settings, Selection(everything=True), shards, moto_pids)
            rounds["core"].append(await core_throughput(settings, corpus, args.images))
            core = bracketed("core", rounds["core"])
            stats = run.stats
            rate = stats.done / stats.elapsed
            print(
                f"backfill: {rate:7.1f} SVGs/s, {stats.outputs / stats.elapsed:7.1f} renditions/s, "
                f"{stats.done} done, {stats.failed} failed in {stats.elapsed:.1f} s"
            )
            print(
                f"render pools fed (≥ 1 render submitted per worker) {stats.pool_fed:.0%} "
                "of the backfill's time"
            )
            cpus = len(os.sched_getaffinity(0))
            print(
                "cpu per image: render workers {:.1f} ms, shard processes (S3, SQL) {:.1f} ms, "
                "moto {:.1f} ms; every shard process from spawn to exit {:.1f} ms; ".format(
                    *(1000 * cpu for cpu in (run.render, run.client, run.moto, run.whole))
                )
                + f"load average {os.getloadavg()[0]:.1f}"
            )
            # Two views of the target. Wall clock here charges the S3 emulator's CPU to the
            # backfill, because moto runs on the same cores; in AWS the S3 servers are not on
            # the processor's CPUs. Per CPU-second of ingest's own processes counts only what
            # a backfill container would spend.
            if args.emulator_cpus:
                print(f"ratio backfill / core, wall clock: {rate / core.rate:.2f}  (moto apart)")
            else:
                free_client = min(core.rate, cpus / (core.cpu_per_image + run.moto))
                print(
                    f"ratio backfill / core, wall clock: {rate / core.rate:.2f}  (with moto's "
                    f"CPU on the same cores, even a free client caps it at "
                    f"{free_client / core.rate:.2f})"
                )
            per_cpu = core.cpu_per_image / run.own
            print(
                f"ratio backfill / core, SVGs per CPU-second of ingest's own processes: "
                f"{per_cpu:.2f}  ({1000 * run.own:.1f} vs {1000 * core.cpu_per_image:.1f} ms "
                f"per image; target ≥ {args.target_ratio})"
            )
            if args.summary:
                print(summary(stats, Selection(everything=True)))

            await added_width(settings, aws, db, rate, shards)
            webp_run = await sharded_run(webp, Selection(everything=True), shards, moto_pids)
            rounds["webp core"].append(await core_throughput(webp, corpus, args.images))
            webp_core = bracketed("webp core", rounds["webp core"])
            print(
                f"webp only: backfill {webp_run.stats.done / webp_run.stats.elapsed:.1f} SVGs/s, "
                f"per image {1000 * webp_run.render:.1f} ms render + "
                f"{1000 * webp_run.client:.1f} ms client; per CPU-second "
                f"{webp_core.cpu_per_image / webp_run.own:.2f} of the webp core"
            )
            print(
                f"projection assumptions: {MACHINE_CPUS} CPUs like these, all busy (one shard "
                "per render worker, so no event loop needs more than a CPU); S3, PostgreSQL and "
                "their latency off the machine (moto's CPU excluded; S3 calls overlap with "
                "renders); CPU per image as measured here, from each shard's pool start to its end"
            )
            webp_seconds = projection("WebP only", webp_core, webp_run)
            projection("all renditions", core, run)

            await resumability(args, settings, aws, db, endpoint, dsn, shards)
    finally:
        await db.close()
    failed = []
    if per_cpu < args.target_ratio:
        failed.append(f"SVGs per CPU-second, backfill / core {per_cpu:.3f} < {args.target_ratio}")
    if webp_seconds > 60 * args.target_minutes:
        failed.append(
            f"projected WebP-only run {webp_seconds / 60:.1f} min > {args.target_minutes:g} min"
        )
    for failure in failed:
        print(f"FAIL  {failure}")
    if failed:
        raise SystemExit(1)
    print("PASS  both targets")


def webp_settings(settings: BackfillSettings) -> BackfillSettings:
    """WebP alone. The formats are not in the render profile, so a PNG setting gives it a
    profile of its own (every image stale again; the WebP bytes are the same), one the
    resumability run below does not use."""
    ours, resume = settings.png_compression, 9 - settings.png_compression
    png = next(level for level in range(10) if level not in (ours, resume))
    return settings.model_copy(update={"render_formats": ("webp",), "png_compression": png})


async def core_rounds(
    settings: BackfillSettings, webp: BackfillSettings, corpus: list[bytes], count: int, rounds: int
) -> dict[str, list[Core]]:
    """Both render cores, in alternated rounds: a machine that gets busier slows both alike.
    Each gets one more round right after its backfill (`bracketed`)."""
    measured: dict[str, list[Core]] = {"core": [], "webp core": []}
    for _ in range(rounds):
        measured["core"].append(await core_throughput(settings, corpus, count))
        measured["webp core"].append(await core_throughput(webp, corpus, count))
    return measured


def bracketed(name: str, rounds: list[Core]) -> Core:
    """The mean of a core's rounds, before its backfill and the one right after it: on a shared
    machine the core's CPU per SVG drifts by a fifth within minutes, and the backfill is
    compared with the core around it, not only with the core minutes before."""
    core = Core(
        statistics.mean(c.rate for c in rounds), statistics.mean(c.cpu_per_image for c in rounds)
    )
    print(
        f"{name + ':':10} {core.rate:7.1f} SVGs/s, {1000 * core.cpu_per_image:.1f} ms CPU per SVG"
        f"  (RenderPool from memory, no S3 or DB; mean of {len(rounds)} rounds, the last right "
        f"after its backfill: {', '.join(f'{1000 * c.cpu_per_image:.1f}' for c in rounds)} ms)"
    )
    return core


async def added_width(
    settings: BackfillSettings, aws: Aws, db: asyncpg.Pool, full_rate: float, shards: int
) -> None:
    """A width added to the configuration: ``--missing-width`` renders and puts only that width."""
    width = min(settings.render_widths) // 2
    wider = settings.model_copy(update={"render_widths": [width, *settings.render_widths]})
    stats = await ShardedBackfill(wider, Selection(missing_width=width), shards).run()
    per_image = len(wider.render_widths) * len(wider.render_formats)
    print(
        f"added width {width}: {stats.done / stats.elapsed:7.1f} SVGs/s with --missing-width "
        f"{width} ({stats.outputs / stats.done:.0f} of {per_image} renditions per image "
        f"rendered and put), against {full_rate:.1f} SVGs/s for --all above"
    )


async def resumability(
    args: argparse.Namespace,
    settings: BackfillSettings,
    aws: Aws,
    db: asyncpg.Pool,
    endpoint: str,
    dsn: str,
    shards: int,
) -> None:
    # Another encoder setting is another profile: every image is stale again, new keys.
    changed = {"INGEST_PNG_COMPRESSION": str(9 - settings.png_compression)}
    profile = render_profile(
        settings.model_copy(update={"png_compression": 9 - settings.png_compression}).render_spec()
    )
    env = {**os.environ, **LOCAL_CREDENTIALS, **changed}
    env.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "DATABASE_URL": dsn,
            "INGEST_RENDER_WORKERS": str(settings.render_workers),
        }
    )
    command = [sys.executable, "-m", "ingest_cli", "backfill", "--all", "--no-progress"]
    command += ["--shards", str(shards)]
    # Its own process group: the kill takes its render workers too, as a container kill does.
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, start_new_session=True
    )
    target = int(args.images * args.kill_at)
    while process.returncode is None:
        if await written(db, profile) >= target:
            os.killpg(process.pid, signal.SIGKILL)
            break
        await asyncio.sleep(0.05)
    await process.wait()
    in_s3 = await rendition_prefixes(aws, settings.previews_bucket, profile)
    rows = {
        str(r["id"])
        for r in await db.fetch(
            "SELECT id FROM images WHERE renditions @> $1::jsonb", [{"profile": profile}]
        )
    }
    done = len(rows)  # the rows written: `written`, once the process is gone
    twice = len(in_s3 - rows)
    print(
        f"resume: killed (SIGKILL) `ingest backfill --all --shards {shards}` at "
        f"{done}/{args.images} rows written ({done / args.images:.0%})"
    )
    started = time.monotonic()
    rerun = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await rerun.communicate()
    elapsed = time.monotonic() - started
    lines = stdout.decode().strip().splitlines()
    print("resume: rerun's summary:\n" + "\n".join(f"    {line}" for line in lines))
    final = await written(db, profile)
    in_flight = sum(
        in_flight_for(shard_settings(settings, Shard(index, shards)).render_workers)
        for index in range(shards)
    )
    print(
        f"resume: {final}/{args.images} up to date after the rerun ({elapsed:.1f} s); "
        f"rendered twice: {twice} (renditions stored, row not yet written at the kill) "
        f"+ at most {in_flight} renders in flight; bound: {in_flight} images in flight"
    )
    if final != args.images or rerun.returncode != 0:
        raise SystemExit(f"resume failed: {final}/{args.images}, exit {rerun.returncode}")


async def with_database(args: argparse.Namespace, endpoint: str) -> None:
    server = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    async with scratch_database(server, "ingest_bench") as dsn:
        await bench(args, endpoint, dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="image rows (default 500)")
    parser.add_argument("--workers", type=int, help="render processes (default: all CPUs)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="share written at the kill")
    parser.add_argument(
        "--shards", type=int, help="backfill processes (default: one per render worker)"
    )
    parser.add_argument("--summary", action="store_true", help="print the backfill's summary")
    parser.add_argument(
        "--core-rounds", type=int, default=2, help="rounds of each render core (default 2)"
    )
    add_emulator_cpus(parser)
    parser.add_argument(
        "--target-ratio", type=float, default=0.85, help="SVGs per CPU-second, backfill / core"
    )
    parser.add_argument(
        "--target-minutes", type=float, default=20.0, help="projected WebP-only run, minutes"
    )
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    # Before anything reads the CPU count: the render workers size themselves from it.
    emulator_cpus = set_emulator_apart(args.emulator_cpus)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as exits:
        with on_cpus(emulator_cpus):
            endpoint = exits.enter_context(moto_server(Path(tmp) / "moto.log"))
        asyncio.run(with_database(args, endpoint))


if __name__ == "__main__":
    main()
