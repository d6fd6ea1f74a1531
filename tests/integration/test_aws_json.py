"""SQS's and EventBridge's data calls without botocore (ingest_common.aws_json) against the
moto server: what they send and receive is what the aiobotocore client sends and receives,
their failures are the exceptions it would raise, they retry what botocore's standard mode
retries, and their spans are the instrumentor's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web
from botocore.exceptions import ClientError, EndpointConnectionError
from ingest_common.aws import Aws
from ingest_common.aws_http import CallSettings
from ingest_common.aws_json import SQS, JsonApi, received_messages
from ingest_common.events import SOURCE
from ingest_common.telemetry.tracing import tracer
from ingest_devstack.local import LOCAL_CREDENTIALS, listening_socket, refused_port
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.integration.test_aws_spans import aws_calls

QUEUE = "ingest-index"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client signs every request. The tests against a stand-in server start no moto
    (whose fixture sets these for the session), and failed without them when run alone."""
    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


ATTRIBUTES: dict[str, Any] = {
    "traceparent": {"DataType": "String", "StringValue": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    "count": {"DataType": "Number", "StringValue": "3"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
}


async def test_a_batch_sent_without_botocore_is_received_as_botocore_receives_it(
    aws: Aws,
) -> None:
    url = await aws.queue_url(QUEUE)
    entries = [
        {"Id": str(i), "MessageBody": f"body {i} – ü", "MessageAttributes": ATTRIBUTES}
        for i in range(3)
    ]
    sent = await aws.sqs_messages.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries})
    assert sorted(s["Id"] for s in sent["Successful"]) == ["0", "1", "2"]

    ours = received_messages(
        await aws.sqs_messages.call(
            "ReceiveMessage",
            {
                "QueueUrl": url,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 1,
                "VisibilityTimeout": 0,  # botocore's receive below sees them too
                "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
                "MessageAttributeNames": ["All"],
            },
        )
    )
    botocores = (
        await aws.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
            MessageAttributeNames=["All"],
        )
    )["Messages"]
    assert len(ours) == len(botocores) == 3

    def comparable(message: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]]:
        return message["MessageId"], message["Body"], message["MessageAttributes"]

    assert sorted(map(comparable, ours)) == sorted(map(comparable, botocores))
    assert ours[0]["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01\xff"
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in ours} == {"1"}

    deleted = await aws.sqs_messages.call(
        "DeleteMessageBatch",
        {
            "QueueUrl": url,
            "Entries": [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(botocores)
            ],
        },
    )
    assert len(deleted["Successful"]) == 3


async def test_sqss_refusal_is_the_client_error_botocore_raises(aws: Aws) -> None:
    url = (await aws.queue_url(QUEUE)).rpartition("/")[0] + "/no-such-queue"
    with pytest.raises(ClientError) as ours:
        await aws.sqs_messages.call("SendMessage", {"QueueUrl": url, "MessageBody": "x"})
    with pytest.raises(ClientError) as botocores:
        await aws.sqs.send_message(QueueUrl=url, MessageBody="x")
    assert ours.value.response["Error"]["Code"] == botocores.value.response["Error"]["Code"]
    assert ours.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert ours.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ours.value.operation_name == botocores.value.operation_name == "SendMessage"


async def test_events_go_to_the_bus_and_a_missing_bus_is_botocores_error(aws: Aws) -> None:
    def entry(bus: str) -> dict[str, str]:
        return {"Source": SOURCE, "DetailType": "test", "Detail": "{}", "EventBusName": bus}

    accepted = await aws.bus.call("PutEvents", {"Entries": [entry(aws.settings.event_bus)]})
    assert accepted["FailedEntryCount"] == 0
    assert accepted["Entries"][0]["EventId"]
    with pytest.raises(ClientError) as ours:
        await aws.bus.call("PutEvents", {"Entries": [entry("no-such-bus")]})
    with pytest.raises(ClientError) as botocores:
        await aws.events.put_events(Entries=[entry("no-such-bus")])  # type: ignore[list-item]
    assert ours.value.response["Error"] == botocores.value.response["Error"]
    assert ours.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_an_unreachable_endpoint_is_botocores_connection_error(aws: Aws) -> None:
    with refused_port() as port:  # refuses connections
        closed = f"http://127.0.0.1:{port}"
        settings = aws.settings.model_copy(
            update={"aws_endpoint_url": closed, "aws_max_attempts": 2}
        )
        async with Aws(settings) as unreachable:
            with pytest.raises(EndpointConnectionError):
                await unreachable.sqs_messages.call(
                    "ReceiveMessage", {"QueueUrl": f"{closed}/123456789012/q"}
                )


# --- retries, against an endpoint that fails on purpose --------------------------------


class Flaky:
    """An HTTP endpoint that answers the first `failures` requests with `status`, `headers`
    and `body`, then `{}`; it records each request's target and body."""

    def __init__(self, failures: int, status: int, body: str, headers: dict[str, str]) -> None:
        self.failures = failures
        self.reply = (status, body, headers)
        self.requests: list[tuple[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.headers["X-Amz-Target"], json.loads(await request.read())))
        if len(self.requests) <= self.failures:
            status, body, headers = self.reply
            return web.Response(status=status, text=body, headers=headers)
        return web.Response(text="{}", content_type="application/x-amz-json-1.0")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Flaky], Any]]:
    runners: list[web.AppRunner] = []

    async def start(flaky: Flaky) -> str:
        app = web.Application()
        app.router.add_post("/", flaky.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        listener = listening_socket()
        await web.SockSite(runner, listener).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def json_api(endpoint: str, attempts: int) -> JsonApi:
    client = SimpleNamespace(meta=SimpleNamespace(endpoint_url=endpoint, region_name="us-east-1"))
    calls = CallSettings(connect_timeout=1, read_timeout=5, max_attempts=attempts, connections=2)
    return JsonApi(get_session(), client, SQS, calls)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (500, '{"__type": "com.amazonaws.sqs#InternalError", "message": "oops"}', {}),
        (503, "<html>Service Unavailable</html>", {}),  # a load balancer's page
        (
            400,
            '{"__type": "com.amazonaws.sqs#ThrottlingException", "message": "slow down"}',
            {"x-amzn-query-error": "RequestThrottled;Sender"},
        ),
    ],
)
async def test_what_may_pass_is_tried_again(
    serve: Callable[[Flaky], Any],
    status: int,
    body: str,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ingest_common.aws_http.backoff", lambda retries: 0.01)
    flaky = Flaky(2, status, body, headers)
    async with json_api(await serve(flaky), attempts=3) as api:
        assert await api.call("SendMessage", {"QueueUrl": "q", "MessageBody": "x"}) == {}
    assert len(flaky.requests) == 3
    assert {target for target, _ in flaky.requests} == {"AmazonSQS.SendMessage"}
    assert all(sent == {"QueueUrl": "q", "MessageBody": "x"} for _, sent in flaky.requests)


async def test_a_lasting_failure_raises_after_the_last_attempt(
    serve: Callable[[Flaky], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ingest_common.aws_http.backoff", lambda retries: 0.01)
    flaky = Flaky(99, 500, '{"__type": "InternalError", "message": "down"}', {})
    async with json_api(await serve(flaky), attempts=3) as api:
        with pytest.raises(ClientError) as caught:
            await api.call("ReceiveMessage", {"QueueUrl": "q"})
    assert caught.value.response["Error"] == {"Code": "InternalError", "Message": "down"}
    assert len(flaky.requests) == 3


async def test_a_refusal_is_not_tried_again(serve: Callable[[Flaky], Any]) -> None:
    flaky = Flaky(
        99,
        400,
        '{"__type": "com.amazonaws.sqs#InvalidAddress", "message": "bad"}',
        {"x-amzn-query-error": "InvalidAddress;Sender"},
    )
    async with json_api(await serve(flaky), attempts=3) as api:
        with pytest.raises(ClientError) as caught:
            await api.call("DeleteMessageBatch", {"QueueUrl": "q", "Entries": []})
    assert caught.value.response["Error"]["Code"] == "InvalidAddress"
    assert len(flaky.requests) == 1


# --- spans -----------------------------------------------------------------------------


async def test_spans_are_the_instrumentors_and_only_inside_a_trace(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    url = await aws.queue_url(QUEUE)
    await aws.sqs_messages.call("SendMessage", {"QueueUrl": url, "MessageBody": "outside"})
    with tracer().start_as_current_span("caller") as caller:
        # A messaging call has our own span (`send`, `settle`): no second one.
        await aws.sqs_messages.call("SendMessage", {"QueueUrl": url, "MessageBody": "inside"})
        received = received_messages(
            await aws.sqs_messages.call(
                "ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}
            )
        )
        await aws.sqs_messages.call(
            "ChangeMessageVisibility",
            {
                "QueueUrl": url,
                "ReceiptHandle": received[0]["ReceiptHandle"],
                "VisibilityTimeout": 0,
            },
        )
        with pytest.raises(ClientError):
            await aws.sqs_messages.call(
                "ChangeMessageVisibility",
                {"QueueUrl": url, "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 0},
            )
    finished = aws_calls(new_spans())
    # Other tests' leftover tasks in this process may finish spans meanwhile: ours are the
    # caller's trace, and a SendMessage has no span anywhere, inside a trace or not.
    assert "SQS.SendMessage" not in {s.name for s in finished}
    context = caller.get_span_context()
    calls = [s for s in finished if s.context.trace_id == context.trace_id]
    assert sorted(s.name for s in calls) == [
        "SQS.ChangeMessageVisibility",
        "SQS.ChangeMessageVisibility",
        "SQS.ReceiveMessage",
    ]
    assert all(s.kind is SpanKind.CLIENT for s in calls)
    assert all(s.parent is not None and s.parent.span_id == context.span_id for s in calls)
    receive = dict(next(s for s in calls if s.name == "SQS.ReceiveMessage").attributes or {})
    assert receive["rpc.service"] == "SQS"
    assert receive["rpc.method"] == "ReceiveMessage"
    assert receive["cloud.region"] == aws.settings.aws_region
    assert receive["server.address"] == "127.0.0.1"
    assert receive["aws.queue_url"] == url
    assert receive["messaging.destination"] == QUEUE
    assert receive["http.status_code"] == 200
    failed = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1
    assert (failed[0].attributes or {})["http.status_code"] == 400
    assert (failed[0].attributes or {})["error.type"] == "ReceiptHandleIsInvalid"
