"""`ingest events tail`: a person watches the domain events live, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import asyncpg
from ingest_cli.events import QUEUE_PREFIX, filter_policy, format_event
from ingest_common.aws import Aws

from tests.integration.pipeline import Pipeline, make_zip, manifest, put_upload, svgs


def tail(aws: Aws, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws.settings.aws_endpoint_url or "",
        "DATABASE_URL": aws.settings.database_url,
        "INGEST_RECEIVE_WAIT_SECONDS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ingest_cli", "events", "tail", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def listening(process: subprocess.Popen[str]) -> str:
    """The first line on stderr: the tail is subscribed from then on."""
    assert process.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stderr.readline), 30)
    assert line.startswith("listening to"), line
    return line


async def one_set(aws: Aws, db: asyncpg.Pool) -> None:
    files = svgs(2)
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    await Pipeline(aws, db).run_all()  # and publishes the outbox


async def tail_queues(aws: Aws) -> list[str]:
    listed = await aws.sqs.list_queues(QueueNamePrefix=QUEUE_PREFIX)
    return list(listed.get("QueueUrls", []))


async def test_tail_prints_each_event_as_json_then_cleans_up(aws: Aws, db: asyncpg.Pool) -> None:
    process = tail(aws, "--json", "--count", "4", "--timeout", "60")
    await listening(process)
    assert len(await tail_queues(aws)) == 1
    await one_set(aws, db)
    out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in events] == [
        "upload.received",
        "product.ready",
        "family.preview_updated",
        "product.indexed",
    ]
    assert await tail_queues(aws) == [], "the temporary queue is deleted"
    topic = await aws.topic_arn(aws.settings.events_topic)
    subscriptions = await aws.sns.list_subscriptions_by_topic(TopicArn=topic)
    assert not [s for s in subscriptions["Subscriptions"] if QUEUE_PREFIX in s["Endpoint"]]


async def test_tail_filters_by_type(aws: Aws, db: asyncpg.Pool) -> None:
    # --count, not --timeout, ends it: a deadline here would race the pipeline's speed.
    process = tail(aws, "--type", "product.*", "--count", "2", "--timeout", "60")
    await listening(process)
    await one_set(aws, db)
    out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert process.returncode == 0, err
    # Unfiltered, the first two would be upload.received and product.ready.
    assert [line.split()[1] for line in out.splitlines()] == ["product.ready", "product.indexed"]


async def test_tail_says_when_too_few_came(aws: Aws) -> None:
    process = tail(aws, "--type", "product.*", "--count", "5", "--timeout", "2")
    await listening(process)
    out, err = await asyncio.to_thread(process.communicate, timeout=60)
    assert out == ""
    assert process.returncode == 1, "fewer events than --count before --timeout"
    assert "0 of 5 event(s) within 2 s" in err
    assert await tail_queues(aws) == [], "the temporary queue is deleted"


def test_tail_without_a_topic_says_so(aws: Aws) -> None:
    env_topic = {"INGEST_EVENTS_TOPIC": "no-such-topic"}
    result = subprocess.run(
        [sys.executable, "-m", "ingest_cli", "events", "tail", "--timeout", "5"],
        env={**os.environ, "AWS_ENDPOINT_URL": aws.settings.aws_endpoint_url or "", **env_topic},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no SNS topic 'no-such-topic'" in result.stderr
    assert "Traceback" not in result.stderr


def test_filter_policy_and_line_format() -> None:
    assert filter_policy(["product.*", "upload.rejected", "product.*"]) == {
        "type": [{"prefix": "product."}, "upload.rejected"]
    }
    line = format_event(
        json.dumps(
            {
                "time": "2026-12-02T09:30:00Z",
                "type": "product.ready",
                "subject": "p1",
                "data": {"images": 3, "listed": [1, 2, 3], "title": "Set"},
            }
        )
    )
    assert line.startswith("2026-12-02T09:30:00Z  product.ready")
    assert line.endswith("p1  images=3 listed=[3] title=Set")
    assert format_event("not json").startswith("(not an event)")
