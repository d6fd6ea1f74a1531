"""The local emulator's speed-ups (`ingest_devstack.moto_app`) give moto's own answers.

The tests and benchmarks run moto through this app, so every SQS and S3 test exercises it;
these check the three replaced functions against what moto computed before, and how the
app names the requests it counts.
"""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import moto
import moto.backends
import moto.sqs.models
from ingest_devstack import moto_app
from moto.sqs.models import sqs_backends

EPOCH = datetime(1970, 1, 1)


def test_the_backends_listed_once_are_moto_s_packages() -> None:
    folder = Path(moto.__file__).parent
    packages = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__")
    )
    assert list(moto.backends.list_of_moto_modules()) == packages
    assert {"s3", "sqs", "sns", "events"} <= set(packages)


def test_sqs_clock_reads_seconds_since_the_epoch_as_moto_did() -> None:
    sqs = vars(moto.sqs.models)  # the names moto's SQS code reads its clock through
    unix_time, unix_time_millis = sqs["unix_time"], sqs["unix_time_millis"]
    assert unix_time is moto_app._unix_time
    moto_reading = (datetime.now(UTC).replace(tzinfo=None) - EPOCH).total_seconds()
    assert abs(unix_time() - moto_reading) < 0.5
    assert abs(unix_time_millis() - 1000 * time.time()) < 500
    # A given time is converted as moto converts it.
    moment = datetime(2026, 12, 4, 6, 0, 0, 250_000)
    assert unix_time(moment) == 1_796_364_000.25
    assert unix_time_millis(moment) == 1_796_364_000_250.0


def test_a_message_is_received_only_within_its_queue_s_retention_period() -> None:
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    backend = sqs_backends["123456789012"][region]
    assert (
        moto.sqs.models.SQSBackend.is_message_valid_based_on_retention_period
        is moto_app._within_retention
    )
    name = f"retention-{time.time_ns()}"
    backend.create_queue(name, MessageRetentionPeriod="60")
    try:
        message = backend.send_message(name, "hello")
        assert backend.is_message_valid_based_on_retention_period(name, message)
        sent = vars(message)  # moto types sent_timestamp as None until it is sent
        sent["sent_timestamp"] -= 59_000  # sent 59 s ago: one second left
        assert backend.is_message_valid_based_on_retention_period(name, message)
        sent["sent_timestamp"] -= 2_000  # 61 s ago: gone, as in SQS
        assert not backend.is_message_valid_based_on_retention_period(name, message)
        # The queue's period is read each time: a longer one keeps the message again.
        backend.set_queue_attributes(name, {"MessageRetentionPeriod": "120"})
        assert backend.is_message_valid_based_on_retention_period(name, message)
    finally:
        backend.delete_queue(name)


def test_requests_are_named_by_their_service_and_operation() -> None:
    def environ(method: str, path: str, query: str = "", **headers: str) -> dict[str, Any]:
        return {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
        }

    signed = "AWS4-HMAC-SHA256 Credential=AKID/20261205/us-east-1/{}/aws4_request, Signed..."
    presigned = "X-Amz-Credential=AKID%2F20261205%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=1"
    assert moto_app.operation(environ("GET", "/previews/a/b.png", presigned)) == "s3 GET object"
    assert moto_app.operation(environ("POST", "/uploads")) == "s3 POST bucket"  # browser form
    assert (
        moto_app.operation(
            environ("POST", "/uploads/", "delete", authorization=signed.format("s3"))
        )
        == "s3 POST bucket?delete"
    )
    assert (
        moto_app.operation(
            environ(
                "POST",
                "/",
                authorization=signed.format("sqs"),
                x_amz_target="AmazonSQS.ReceiveMessage",
            )
        )
        == "sqs ReceiveMessage"
    )
    assert moto_app.operation(environ("POST", "/moto-api/reset")) == "moto-api"
    # The query protocol names its action in a form body, which moto must still be able to read.
    body = b"Action=PublishBatch&Version=2010-03-31"
    form = {
        **environ("POST", "/", authorization=signed.format("sns")),
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    assert moto_app.operation(form) == "sns PublishBatch"
    assert form["wsgi.input"].read() == body
