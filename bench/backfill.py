"""Benchmark `ingest backfill` against the render core it feeds, and its resumability.

    uv run python bench/backfill.py                 # 500 images, all CPUs, kill at 30 %
    uv run python bench/backfill.py --images 5000 --workers 2

What it does, all on real components:

1. starts a moto server on loopback and a throwaway database on the local PostgreSQL
   (DATABASE_URL's server; dropped at the end), migrates it and bootstraps the topology;
2. uploads N originals (the sample sets' SVGs, repeated under distinct keys) and inserts
   contributor, family, product and ``ready`` image rows with no renditions;
3. core: the processor's RenderPool renders the same N SVGs from memory (no S3, no DB);
4. backfill: ``Backfill(--all)`` over the N rows, with the same pool size; prints SVGs/s,
   renditions/s and the ratio backfill / core, plus the CPU the emulator and the backfill's
   own event loop took (they share the machine with the render workers, unlike in AWS);
   then a width is added to the configuration and ``--missing-width`` backfills just it;
5. resumability: with another render profile (so every image is stale again), runs
   ``ingest backfill --all`` as a separate process, SIGKILLs it once ~30 % of the rows are
   written, reruns it, and counts images rendered twice (renditions already in S3 at the kill
   for rows not written yet) against the bound (images in flight).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.topology import apply_topology, load_topology
from ingest_devstack.local import LOCAL_CREDENTIALS, moto_server, scratch_database
from ingest_processor.backfill import Backfill, BackfillSettings, Selection, summary
from ingest_processor.pool import RenderPool
from ingest_processor.renditions import render_profile
from procstat import cpu_seconds, own_child, process_tree

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
IMAGES_PER_PRODUCT = 100


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
                "INSERT INTO products (id, upload_id, family_id, contributor_id, product_type, "
                "title, license, status, image_count, images_ready, completed_at) "
                "VALUES ($1, $2, $3, 'bench', 'icon_set', 'Bench', 'standard', 'ready', $4, $4, "
                "now())",
                product,
                upload,
                family,
                len(chunk),
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


async def bench(args: argparse.Namespace, endpoint: str, dsn: str) -> None:
    settings = BackfillSettings(
        database_url=dsn,
        aws_endpoint_url=endpoint,
        **({"render_workers": args.workers} if args.workers else {}),
    )
    workers = settings.render_workers
    corpus = svgs()
    moto = own_child("ingest_devstack.moto_app")
    if moto is None:
        raise SystemExit("no moto server among this process's children: its CPU would read 0")
    moto_pids = process_tree(moto)  # gunicorn's master and its worker
    print(
        f"bench: {args.images} images ({len(corpus)} distinct sample SVGs), {workers} render "
        f"workers on {len(os.sched_getaffinity(0))} CPUs, {len(settings.render_widths)} widths × "
        f"{len(settings.render_formats)} formats, S3 {settings.s3_concurrency} at once, "
        f"pages of {settings.backfill_batch_size}"
    )
    db = await create_pool(settings)
    try:
        async with Aws(settings) as aws:
            await apply_topology(aws, load_topology(settings))
            started = time.monotonic()
            keys = await upload_originals(aws, settings.uploads_bucket, corpus, args.images)
            await insert_rows(db, corpus, keys)
            print(f"setup: originals and rows in {time.monotonic() - started:.1f} s")

            core = await core_throughput(settings, corpus, args.images)
            print(f"core:     {core.rate:7.1f} SVGs/s  (RenderPool from memory, no S3 or DB)")

            async with RenderPool(workers, settings.render_spec(), settings.render_timeout) as pool:
                await asyncio.gather(*(pool.render(corpus[i]) for i in range(workers)))
                moto_before = cpu_seconds(moto_pids)
                own_before = own_cpu()
                workers_before = cpu_seconds(pool.worker_pids(), children=True)
                backfill = Backfill(settings, aws, db, Selection(everything=True), pool=pool)
                stats = await backfill.run()
                workers_cpu = cpu_seconds(pool.worker_pids(), children=True) - workers_before
            moto_cpu = cpu_seconds(moto_pids) - moto_before
            own = own_cpu() - own_before
            rate = stats.done / stats.elapsed
            print(
                f"backfill: {rate:7.1f} SVGs/s, {stats.outputs / stats.elapsed:7.1f} renditions/s, "
                f"{stats.done} done, {stats.failed} failed in {stats.elapsed:.1f} s"
            )
            print(
                f"render pool fed (≥ {workers} renders submitted) "
                f"{1 - stats.pool_starved / stats.elapsed:.0%} of the backfill's time"
            )
            cpus = len(os.sched_getaffinity(0))
            available = cpus * stats.elapsed
            per_image = [1000 * cpu / stats.done for cpu in (workers_cpu, own, moto_cpu)]
            print(
                f"cpu during backfill (of {available:.0f} CPU-s): render workers "
                f"{workers_cpu:.1f} s, backfill event loop {own:.1f} s, moto {moto_cpu:.1f} s; "
                "per image: {:.0f} / {:.0f} / {:.0f} ms; ".format(*per_image)
                + f"load average {os.getloadavg()[0]:.1f}"
            )
            # Two views of the target. Wall clock here charges the S3 emulator's CPU to the
            # backfill, because moto runs on the same cores; in AWS the S3 servers are not on
            # the processor's CPUs. Per CPU-second of ingest's own processes counts only what
            # a backfill container would spend.
            own_cpu_per_image = (workers_cpu + own) / stats.done
            # With a client that cost nothing: the core's own rate, or what the CPUs can give
            # to renders and moto together, whichever is lower (with fewer workers than CPUs,
            # moto has a CPU of its own).
            free_client = min(core.rate, cpus / (core.cpu_per_image + moto_cpu / stats.done))
            ceiling = free_client / core.rate
            print(
                f"ratio backfill / core, wall clock: {rate / core.rate:.2f}  (target ≥ 0.90; "
                f"with moto's CPU on the same cores, even a free client caps it at {ceiling:.2f})"
            )
            print(
                f"ratio backfill / core, SVGs per CPU-second of ingest's own processes: "
                f"{core.cpu_per_image / own_cpu_per_image:.2f}  "
                f"({1000 * own_cpu_per_image:.0f} vs {1000 * core.cpu_per_image:.0f} ms per image)"
            )
            if args.summary:
                print(summary(stats, Selection(everything=True)))
            await added_width(settings, aws, db, rate)

            await resumability(args, settings, aws, db, endpoint, dsn)
    finally:
        await db.close()


async def added_width(
    settings: BackfillSettings, aws: Aws, db: asyncpg.Pool, full_rate: float
) -> None:
    """A width added to the configuration: ``--missing-width`` renders and puts only that width."""
    width = min(settings.render_widths) // 2
    wider = settings.model_copy(update={"render_widths": [width, *settings.render_widths]})
    stats = await Backfill(wider, aws, db, Selection(missing_width=width)).run()
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
        f"resume: killed (SIGKILL) `ingest backfill --all` at {done}/{args.images} rows written "
        f"({done / args.images:.0%})"
    )
    started = time.monotonic()
    rerun = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await rerun.communicate()
    elapsed = time.monotonic() - started
    lines = stdout.decode().strip().splitlines()
    print("resume: rerun's summary:\n" + "\n".join(f"    {line}" for line in lines))
    final = await written(db, profile)
    in_flight = RenderPool.capacity_for(settings.render_workers) + settings.s3_concurrency
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
    parser.add_argument("--summary", action="store_true", help="print the backfill's summary")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp) / "moto.log") as endpoint:
        asyncio.run(with_database(args, endpoint))


if __name__ == "__main__":
    main()
