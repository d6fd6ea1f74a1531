"""`ingest demo`: the whole pipeline on this machine, from upload to search.

Starts a moto server on loopback, migrates a fresh demo database on the server named by
DATABASE_URL, bootstraps the topology, runs the four services as four OS processes,
uploads a sample set, waits for it to be searchable and prints what happened. Whatever
it started, it stops: on success, on failure and on Ctrl-C.

The moto server and the service processes are ingest_devstack's (tools/devstack), a
development package that no image ships: without it this command says so and exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from ingest_common.aws import Aws
from ingest_common.db.pool import connect
from ingest_common.search import PostgresSearch
from ingest_common.topology import apply_topology, load_topology
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ingest_cli.settings import CliSettings
from ingest_cli.status import UploadStatus, format_status, load_status, stage_times
from ingest_cli.trace import OtlpReceiver, load_spans, summarise
from ingest_cli.upload import upload_set

try:  # The local stack is a development package: a shipped CLI (its image) has none.
    from ingest_devstack.local import (
        LOCAL_CREDENTIALS,
        fresh_database,
        local_env,
        moto_server,
        services,
    )
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] != "ingest_devstack":
        raise
    raise SystemExit(
        "ingest demo: needs the local development stack (package ingest-devstack, with moto), "
        "which this installation does not have; run `make demo` in a checkout"
    ) from exc

DEMO_DATABASE = "ingest_demo"
CONTRIBUTOR = "demo"
TIMEOUT = 180.0


async def run_demo(settings: CliSettings, sample: Path, output: Path) -> int:
    output.mkdir(parents=True, exist_ok=True)
    print(f"ingest demo: sample set {sample}")
    dsn = await fresh_database(settings.database_url, DEMO_DATABASE)
    print(f"database  {dsn} (fresh)")
    with (
        moto_server(output / "moto.log") as endpoint,
        OtlpReceiver(output / "spans.jsonl") as collector,
    ):
        print(f"aws       {endpoint} (moto server on loopback)")
        print(f"traces    {collector.endpoint} (OTLP/HTTP receiver → {collector.path})")
        os.environ.update(LOCAL_CREDENTIALS)
        export_cli_spans(collector)
        env = local_env(
            endpoint,
            dsn,
            log_format="json",
            safety_net_delay="30",
            stall_timeout="150",
            mosaic_images="16",
            # The demo shows the whole trace; by default only a share of uploads keep a
            # span per S3, SQS and SQL call.
            trace_client_spans="1",
        )
        env.update(collector.env())
        demo_settings = settings.model_copy(
            update={"aws_endpoint_url": endpoint, "database_url": dsn}
        )
        async with Aws(demo_settings) as aws:
            await apply_topology(aws, load_topology(demo_settings))
            with services(env, output / "logs") as running:
                pids = ", ".join(f"{n} pid {p.pid}" for n, p in running.processes.items())
                print(f"services  {pids}")
                uploaded = await upload_set(aws, sample, CONTRIBUTOR)
                print(
                    f"upload    {uploaded.upload_id}  s3://{demo_settings.uploads_bucket}/{uploaded.key}"
                )
                status = await wait_until_searchable(dsn, uploaded.upload_id)
                code = await report(aws, dsn, status, output, uploaded.trace_id)
            # The services have stopped, flushing their last spans on the way out.
            report_trace(collector, uploaded.upload_id, uploaded.trace_id)
            return code


def export_cli_spans(collector: OtlpReceiver) -> None:
    """Send this process's spans (the upload's first, `upload set`) to the receiver too."""
    from ingest_common.telemetry.otlp_spans import SpanExporter as OtlpSpanExporter

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        exporter = OtlpSpanExporter(endpoint=f"{collector.endpoint}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))


def report_trace(collector: OtlpReceiver, upload: object, trace_id: str) -> None:
    per_service = summarise(load_spans(collector.path), trace_id)
    print(
        f"spans      {sum(per_service.values())} spans in the upload's trace ("
        + ", ".join(f"{name} {n}" for name, n in per_service.items())
        + f") in {collector.path}"
    )
    print(f"           see the tree: ingest trace {upload} --spans {collector.path}")


async def wait_until_searchable(dsn: str, upload: object) -> UploadStatus:
    connection = await connect(dsn)
    try:
        deadline = time.monotonic() + TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            status = await load_status(connection, upload)  # type: ignore[arg-type]
            if status is not None:
                line = progress(status)
                if line != last:
                    print(f"          {line}")
                    last = line
                if status.finished:
                    return status
            await asyncio.sleep(0.25)
    finally:
        await connection.close()
    raise TimeoutError(
        f"the upload was not searchable within {TIMEOUT:.0f} s; see demo-output/logs"
    )


def progress(status: UploadStatus) -> str:
    product = status.product
    if product is None:
        return f"upload {status.upload['status']}"
    return (
        f"{product['images_ready']}/{product['image_count']} images ready, "
        f"{product['images_failed']} failed"
        + (", mosaic built" if product["previewed_at"] else "")
        + (", indexed" if product["indexed_at"] else "")
    )


async def report(aws: Aws, dsn: str, status: UploadStatus, output: Path, trace_id: str) -> int:
    print()
    print(format_status(status))
    product = status.product
    if product is None:
        return 1
    settings = aws.settings
    ready = [image for image in status.images if image["status"] == "ready"]
    renditions = [r for image in ready for r in image["renditions"]]
    print()
    kib = sum(r["bytes"] for r in renditions) / 1024
    print(
        f"renditions {len(renditions)} objects in s3://{settings.previews_bucket}/renditions/"
        f"<image id>/<profile>/<width>.<png|webp>, {kib:.0f} KiB"
    )
    if ready:
        first = ready[0]
        print(
            f"           e.g. {first['path']}: "
            + ", ".join(r["key"] for r in first["renditions"][:2])
            + ", …"
        )
    connection = await connect(dsn)
    try:
        preview = await connection.fetchrow(
            "SELECT * FROM family_previews WHERE family_id = $1", product["family_id"]
        )
        query = (product["tags"] or [product["title"]])[0]
        hits = await PostgresSearch(connection).search(query)
    finally:
        await connection.close()
    if preview:
        for key, suffix in ((preview["png_key"], "png"), (preview["webp_key"], "webp")):
            local = output / f"family-mosaic.{suffix}"
            local.write_bytes(await aws.get_bytes(settings.previews_bucket, key))
        print(
            f"mosaic     {output / 'family-mosaic.png'} (and .webp), "
            f"{preview['width']}×{preview['height']} px, {len(preview['image_ids'])} random images "
            f"of family {product['family']!r}; s3://{settings.previews_bucket}/{preview['png_key']}"
        )
    print(
        f"search     {query!r} → "
        + ("; ".join(f"{h.title} (rank {h.rank:.3f})" for h in hits[:3]) if hits else "no hit")
    )
    print(f"trace      {trace_id}  (the upload's trace id: S3 metadata, then every queue)")
    print("stages")
    for name, seconds in stage_times(status):
        print(f"  {name:<42} {'-' if seconds is None else f'{seconds:6.2f} s'}")
    summary = {
        "upload_id": str(status.upload["id"]),
        "product_id": str(product["id"]),
        "images_ready": product["images_ready"],
        "images_failed": product["images_failed"],
        "mosaic": str(output / "family-mosaic.png") if preview else None,
        "search_hits": len(hits),
        "trace_id": trace_id,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = product["images_ready"] > 0 and preview is not None and bool(hits)
    print("\ndemo " + ("succeeded" if ok else "FAILED") + f"; logs in {output / 'logs'}")
    return 0 if ok else 1
