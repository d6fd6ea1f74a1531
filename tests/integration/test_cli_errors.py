"""A user's mistake is one line and a documented exit code, never a traceback (`ingest` run
as a person runs it, in a subprocess); and `--json`, `--version` work."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings

from tests.integration.pipeline import run_ingest

QUEUES = "ingest-batch, ingest-render, ingest-render-slow, ingest-preview, ingest-index"


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a run that exited with `code` (and no traceback)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def with_database(settings: IngestSettings, url: str) -> IngestSettings:
    return settings.model_copy(update={"database_url": url})


def test_version(settings: IngestSettings) -> None:
    result = run_ingest(settings, "--version")
    assert result.stdout.startswith("ingest ")
    assert result.stdout.split()[1][0].isdigit()


@pytest.mark.usefixtures("db")
def test_an_unknown_upload_is_not_found(settings: IngestSettings) -> None:
    upload = uuid.uuid4()
    result = run_ingest(settings, "status", str(upload), check=False)
    assert one_line(result, 1) == f"ingest status: no upload {upload}"
    assert result.stdout == ""


def test_a_malformed_upload_id_is_a_usage_error(settings: IngestSettings) -> None:
    result = run_ingest(settings, "status", "upload-42", check=False)
    assert one_line(result, 2) == "ingest status: not an upload id: 'upload-42' (a UUID)"


@pytest.mark.parametrize("command", [["status", str(uuid.UUID(int=1))], ["search", "star"]])
def test_an_unreachable_database(settings: IngestSettings, command: list[str]) -> None:
    closed = with_database(settings, "postgresql://postgres:secret@127.0.0.1:1/test")
    result = run_ingest(closed, *command, check=False)
    line = one_line(result, 3)
    assert line.startswith(
        f"ingest {command[0]}: cannot reach the database at 127.0.0.1:1 (DATABASE_URL): "
    )
    assert "secret" not in line


def test_a_missing_database(settings: IngestSettings) -> None:
    address = settings.database_url.rsplit("/", 1)[0]
    missing = with_database(settings, f"{address}/no_such_database_here")
    result = run_ingest(missing, "status", str(uuid.UUID(int=1)), check=False)
    assert one_line(result, 3).startswith('ingest status: no database "no_such_database_here" at ')


@pytest.mark.usefixtures("aws")
def test_a_queue_by_its_role(settings: IngestSettings) -> None:
    result = run_ingest(settings, "dlq", "list", "render", check=False)
    assert one_line(result, 0) == "0 message(s) in the dead-letter queue of render"


def test_an_unknown_queue(settings: IngestSettings) -> None:
    result = run_ingest(settings, "dlq", "list", "no-such-queue", check=False)
    assert one_line(result, 2) == (
        f'ingest dlq list: no queue named "no-such-queue" (known: {QUEUES})'
    )


def test_a_queue_not_created_yet(settings: IngestSettings) -> None:
    urllib_reset(settings)
    result = run_ingest(settings, "dlq", "list", "render", check=False)
    line = one_line(result, 1)
    assert line.startswith("ingest dlq list: ")
    assert "`ingest bootstrap` creates the queues" in line


def urllib_reset(settings: IngestSettings) -> None:
    import urllib.request

    request = urllib.request.Request(f"{settings.aws_endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()


def timed(settings: IngestSettings, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    result = run_ingest(settings, *args, check=False)
    return result, time.monotonic() - start


def test_an_unreachable_endpoint_fails_fast(settings: IngestSettings, aws: Aws) -> None:
    # The command's own start is slow on a busy machine: measured apart, as the same command
    # against the endpoint that answers (the same imports and clients; `--version` imports
    # less, and under CI's load that alone differed by 7 s).
    reachable, startup = timed(settings, "dlq", "list", "render")
    assert reachable.returncode == 0, reachable.stderr
    closed = settings.model_copy(update={"aws_endpoint_url": "http://127.0.0.1:1"})
    result, elapsed = timed(closed, "dlq", "list", "render")
    assert one_line(result, 3) == (
        "ingest dlq list: cannot reach the AWS endpoint http://127.0.0.1:1/ (AWS_ENDPOINT_URL)"
    )
    assert elapsed - startup < 5


@pytest.mark.parametrize(
    "command", [["events", "tail", "--timeout", "5"], ["bootstrap"], ["reconcile", "--dry-run"]]
)
def test_every_command_reports_an_unreachable_endpoint_alike(
    settings: IngestSettings, command: list[str]
) -> None:
    closed = settings.model_copy(update={"aws_endpoint_url": "http://127.0.0.1:1"})
    result = run_ingest(closed, *command, check=False)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"ingest {' '.join(command[: 2 if command[0] == 'events' else 1])}: "
        "cannot reach the AWS endpoint http://127.0.0.1:1/ (AWS_ENDPOINT_URL)"
    )


def test_missing_credentials(settings: IngestSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run_ingest(settings, "dlq", "list", "render", check=False)
    assert one_line(result, 4) == (
        "ingest dlq list: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,"
        " or AWS_PROFILE with a profile that has them"
    )


# --- --json -------------------------------------------------------------------------------


async def test_status_json(settings: IngestSettings, db: asyncpg.Pool) -> None:
    upload = uuid.uuid4()
    async with db.acquire() as connection:
        await connection.execute(
            "INSERT INTO contributors (id) VALUES ('acme') ON CONFLICT DO NOTHING"
        )
        await connection.execute(
            "INSERT INTO uploads (id, bucket, object_key, etag, contributor_id)"
            " VALUES ($1, 'ingest-uploads', 'uploads/acme/set.zip', 'etag', 'acme')",
            upload,
        )
    result = run_ingest(settings, "status", str(upload), "--json")
    status = json.loads(result.stdout)
    assert status["upload"]["id"] == str(upload)
    assert status["upload"]["object_key"] == "uploads/acme/set.zip"
    assert (status["product"], status["images"], status["finished"]) == (None, [], False)


@pytest.mark.usefixtures("db")
def test_search_json(settings: IngestSettings) -> None:
    result = run_ingest(settings, "search", "nothing-like-this", "--json", check=False)
    assert one_line(result, 1) == "no match"
    assert json.loads(result.stdout)["total"] == 0


async def test_dlq_list_json(settings: IngestSettings, aws: Aws) -> None:
    url = await aws.queue_url("ingest-render-dlq")
    await aws.sqs.send_message(QueueUrl=url, MessageBody='{"image": 1}')
    result = run_ingest(settings, "dlq", "list", "render", "--json")
    [letter] = json.loads(result.stdout)
    assert letter["body"] == {"image": 1}
    assert letter["receive_count"] >= 1
    assert set(letter) == {"message_id", "sent_at", "receive_count", "reason", "attributes", "body"}


def test_trace_json(settings: IngestSettings, tmp_path: Path) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    records = [
        {"trace_id": trace_id, "span_id": "a" * 16, "parent_span_id": None, "name": "upload",
         "service": "cli", "start_ns": 0, "end_ns": 2_000_000},
        {"trace_id": trace_id, "span_id": "b" * 16, "parent_span_id": "a" * 16,
         "name": "batch", "service": "batcher", "start_ns": 1_000_000, "end_ns": 1_500_000},
    ]  # fmt: skip
    spans = tmp_path / "spans.jsonl"
    spans.write_text("".join(json.dumps(record) + "\n" for record in records))
    result = run_ingest(settings, "trace", trace_id, "--spans", str(spans), "--json")
    tree = json.loads(result.stdout)
    assert (tree["trace_id"], tree["span_count"]) == (trace_id, 2)
    [root] = tree["roots"]
    assert (root["name"], [child["name"] for child in root["children"]]) == ("upload", ["batch"])


def test_trace_of_an_unreadable_file(settings: IngestSettings, tmp_path: Path) -> None:
    spans = tmp_path / "spans.json"
    spans.write_text('{"hello": "world"}')
    result = run_ingest(settings, "trace", "0" * 32, "--spans", str(spans), check=False)
    assert one_line(result, 2).startswith(f"ingest trace: {spans}: not a span")
