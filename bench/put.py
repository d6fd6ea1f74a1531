"""CPU per PUT of the render workers' S3 client, against one PUT per thread and http.client.

    uv run --frozen python bench/put.py                  # 4 alternated rounds of 200 renders

Each client puts the same renders, eight rendition-sized bodies each (1.5–12 KB, twice), into
the same moto bucket with the same SigV4 headers, every thread on its own keep-alive
connections:

- **ingest**: `BlockingPutter.put_objects`, a render's eight at once from one thread, with
  `STORING` threads (`ingest_common.s3_put_blocking` over `http1`, with its retries, outcomes
  and error mapping), as a render worker stores them;
- **ingest, a PUT per thread**: `BlockingPutter.put_object`, each PUT handed to one of eight
  threads, as the workers stored renditions before `put_objects`;
- **http.client**: the baseline, what `BlockingPutter` sent its requests through before, a bare
  `HTTPConnection.request` + `getresponse().read()` with the same signed headers, a PUT per
  thread of eight.

Rounds alternate (the order flips each round), so a machine that gets busier slows all alike;
CPU is this process's (every thread, user + system: the loopback socket's kernel work counts, as
it does in a worker), per PUT. moto's own CPU is not counted. Exit status 1 unless ingest's
median is below both others'.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from ingest_common.aws import Aws
from ingest_common.s3_put_blocking import BlockingPutter, ObjectPut, PutSettings
from ingest_common.s3_request import object_headers
from ingest_common.settings import IngestSettings
from ingest_common.sigv4 import Credentials, sign
from ingest_common.topology import apply_topology, load_topology
from ingest_devstack.local import LOCAL_CREDENTIALS, moto_server
from ingest_processor.worker import STORING

BODY_SIZES = (1_500, 2_500, 5_000, 12_000) * 2  # a render's eight renditions
BODIES = [os.urandom(size) for size in BODY_SIZES]
PUT_THREADS = 8  # a thread per rendition: how workers stored them before put_objects
HEADERS = object_headers("image/webp", "public, max-age=31536000")
StoreRender = Callable[[str], list[int]]  # (key prefix) → each rendition's HTTP status


@dataclass(frozen=True)
class Client:
    store: StoreRender
    threads: int  # renders stored at once


def ingest_at_once(puts: PutSettings, bucket: str, credentials: Credentials) -> Client:
    putter = BlockingPutter(puts)

    def store(prefix: str) -> list[int]:
        objects = [ObjectPut(bucket, f"{prefix}/{i}", b, HEADERS) for i, b in enumerate(BODIES)]
        outcomes = putter.put_objects(objects, credentials)
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        return [outcome.status for outcome in outcomes]

    return Client(store, STORING)


def a_put_per_thread(put: Callable[[str, bytes], int]) -> Client:
    """Each of a render's PUTs on a thread of its own, the render done when all are."""
    threads = ThreadPoolExecutor(PUT_THREADS)

    def store(prefix: str) -> list[int]:
        futures = [threads.submit(put, f"{prefix}/{i}", body) for i, body in enumerate(BODIES)]
        return [future.result() for future in futures]

    return Client(store, PUT_THREADS)


def ingest_put(puts: PutSettings, bucket: str, credentials: Credentials) -> Client:
    putter = BlockingPutter(puts)

    def put(key: str, body: bytes) -> int:
        outcome = putter.put_object(bucket, key, body, HEADERS, credentials)
        if outcome.error is not None:
            raise outcome.error
        return outcome.status

    return a_put_per_thread(put)


def http_client_put(puts: PutSettings, bucket: str, credentials: Credentials) -> Client:
    local = threading.local()

    def put(key: str, body: bytes) -> int:
        host, path = puts.endpoint.address(bucket, key)
        if (connection := getattr(local, "connection", None)) is None:
            connection = local.connection = http.client.HTTPConnection(host, timeout=10)
        signed = sign(
            "PUT", host, path, HEADERS, body,
            credentials=credentials, region=puts.endpoint.region, now=datetime.now(UTC),
        )  # fmt: skip
        connection.request("PUT", path, body=body, headers=signed)
        reply = connection.getresponse()
        reply.read()
        return reply.status

    return a_put_per_thread(put)


def cpu_per_put(client: Client, name: str, renders: int) -> float:
    started = time.process_time()
    with ThreadPoolExecutor(client.threads) as threads:
        statuses = [
            status
            for render in threads.map(lambda i: client.store(f"bench/{name}/{i}"), range(renders))
            for status in render
        ]
    cpu = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"{name}: statuses {sorted(set(statuses))}")
    return cpu / len(statuses)


async def target(endpoint: str) -> tuple[PutSettings, str, Credentials]:
    settings = IngestSettings(aws_endpoint_url=endpoint)
    async with Aws(settings) as aws:
        await apply_topology(aws, load_topology(settings))
        return aws.put_settings(), settings.previews_bucket, await aws.s3_objects.credentials()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=200, help="renders per round (200)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    with TemporaryDirectory() as tmp, moto_server(Path(tmp) / "moto.log") as endpoint:
        puts, bucket, credentials = asyncio.run(target(endpoint))
        clients = {
            "ingest": ingest_at_once(puts, bucket, credentials),
            "ingest, a PUT per thread": ingest_put(puts, bucket, credentials),
            "http.client": http_client_put(puts, bucket, credentials),
        }
        measured: dict[str, list[float]] = {name: [] for name in clients}
        for name, client in clients.items():  # warm-up: connections, imports
            cpu_per_put(client, f"warm-{name}", 2 * client.threads)
        for round_ in range(args.rounds):
            order = list(clients.items())
            for name, client in order if round_ % 2 == 0 else reversed(order):
                measured[name].append(cpu_per_put(client, f"{name}-{round_}", args.renders))
    print(
        f"bench: {args.rounds} alternated rounds of {args.renders:,} renders, each eight PUTs of "
        f"{'/'.join(f'{size / 1000:g}' for size in BODY_SIZES[:4])} KB (twice), to moto on "
        "loopback; ms of this process's CPU per PUT"
    )
    for name, figures in measured.items():
        print(
            f"{name:25} median {1000 * statistics.median(figures):.3f}  "
            f"(rounds: {', '.join(f'{1000 * figure:.3f}' for figure in figures)})"
        )
    ours = statistics.median(measured["ingest"])
    failed = False
    for name in ("ingest, a PUT per thread", "http.client"):
        baseline = statistics.median(measured[name])
        print(f"ingest / {name}: {ours / baseline:.2f}")
        failed = failed or ours >= baseline
    if failed:
        raise SystemExit("FAIL  ingest's PUT does not cost the least CPU")
    print("PASS")


if __name__ == "__main__":
    main()
