"""CPU per PUT of the render workers' S3 client against the same request through http.client.

    uv run --frozen python bench/put.py                  # 8 threads, 4 rounds of 1,600 PUTs each

Both put the same rendition-sized bodies (1.5–12 KB, as a render's eight) into the same moto
bucket with the same SigV4 headers, from the same number of threads (a render worker's
STORE_THREADS), each thread on its own keep-alive connection:

- **ingest**: `BlockingPutter.put_object` (`ingest_common.s3_put_blocking` over `http1`), with
  its retries, outcome and error mapping, as a worker calls it;
- **http.client**: the baseline, what `BlockingPutter` sent its requests through before, a bare
  `HTTPConnection.request` + `getresponse().read()` with the same signed headers.

Rounds alternate (the order flips each round), so a machine that gets busier slows both alike;
CPU is this process's (every thread, user + system: the loopback socket's kernel work counts, as
it does in a worker), per PUT. moto's own CPU is not counted. Exit status 1 if ingest's median
is not below http.client's.
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
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from ingest_common.aws import Aws
from ingest_common.s3_put_blocking import BlockingPutter, PutSettings
from ingest_common.s3_request import object_headers
from ingest_common.settings import IngestSettings
from ingest_common.sigv4 import Credentials, sign
from ingest_common.topology import apply_topology, load_topology
from ingest_devstack.local import LOCAL_CREDENTIALS, moto_server

BODY_SIZES = (1_500, 2_500, 5_000, 12_000)
Put = Callable[[str, bytes], int]  # (key, body) → HTTP status


def ingest_put(puts: PutSettings, bucket: str, credentials: Credentials) -> Put:
    putter = BlockingPutter(puts)
    headers = object_headers("image/webp", "public, max-age=31536000")

    def put(key: str, body: bytes) -> int:
        outcome = putter.put_object(bucket, key, body, headers, credentials)
        if outcome.error is not None:
            raise outcome.error
        return outcome.status

    return put


def http_client_put(puts: PutSettings, bucket: str, credentials: Credentials) -> Put:
    local = threading.local()
    headers = object_headers("image/webp", "public, max-age=31536000")

    def put(key: str, body: bytes) -> int:
        host, path = puts.endpoint.address(bucket, key)
        if (connection := getattr(local, "connection", None)) is None:
            connection = local.connection = http.client.HTTPConnection(host, timeout=10)
        signed = sign(
            "PUT", host, path, headers, body,
            credentials=credentials, region=puts.endpoint.region, now=datetime.now(UTC),
        )  # fmt: skip
        connection.request("PUT", path, body=body, headers=signed)
        reply = connection.getresponse()
        reply.read()
        return reply.status

    return put


def cpu_per_put(put: Put, threads: ThreadPoolExecutor, name: str, count: int) -> float:
    bodies = [os.urandom(size) for size in BODY_SIZES]
    started = time.process_time()
    statuses = list(
        threads.map(lambda i: put(f"bench/{name}/{i}", bodies[i % len(bodies)]), range(count))
    )
    cpu = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"{name}: statuses {sorted(set(statuses))}")
    return cpu / count


async def target(endpoint: str) -> tuple[PutSettings, str, Credentials]:
    settings = IngestSettings(aws_endpoint_url=endpoint)
    async with Aws(settings) as aws:
        await apply_topology(aws, load_topology(settings))
        return aws.put_settings(), settings.previews_bucket, await aws.s3_objects.credentials()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8, help="threads putting (default 8)")
    parser.add_argument("--puts", type=int, default=1_600, help="PUTs per round (default 1,600)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each (default 4)")
    args = parser.parse_args()
    os.environ.update(LOCAL_CREDENTIALS)
    with TemporaryDirectory() as tmp, moto_server(Path(tmp) / "moto.log") as endpoint:
        puts, bucket, credentials = asyncio.run(target(endpoint))
        clients = {
            "ingest": ingest_put(puts, bucket, credentials),
            "http.client": http_client_put(puts, bucket, credentials),
        }
        measured: dict[str, list[float]] = {name: [] for name in clients}
        with ThreadPoolExecutor(args.threads) as threads:
            for name, put in clients.items():  # warm-up: connections, imports
                cpu_per_put(put, threads, f"warm-{name}", 8 * args.threads)
            for round_ in range(args.rounds):
                order = list(clients.items())
                for name, put in order if round_ % 2 == 0 else reversed(order):
                    measured[name].append(cpu_per_put(put, threads, f"{name}-{round_}", args.puts))
    print(
        f"bench: {args.rounds} alternated rounds of {args.puts:,} PUTs of "
        f"{'/'.join(f'{size / 1000:g}' for size in BODY_SIZES)} KB from {args.threads} threads "
        "to moto on loopback; ms of this process's CPU per PUT"
    )
    for name, figures in measured.items():
        print(
            f"{name:12} median {1000 * statistics.median(figures):.3f}  "
            f"(rounds: {', '.join(f'{1000 * figure:.3f}' for figure in figures)})"
        )
    ours, baseline = (statistics.median(measured[name]) for name in ("ingest", "http.client"))
    print(f"ingest / http.client: {ours / baseline:.2f}")
    if ours >= baseline:
        raise SystemExit("FAIL  ingest's PUT costs no less CPU than http.client's")
    print("PASS")


if __name__ == "__main__":
    main()
