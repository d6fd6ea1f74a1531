"""SQS's and EventBridge's data calls over aiohttp, signed by `sigv4`: the AWS JSON protocol
without botocore.

Every image costs SQS calls in each service it passes (its share of a receive, a delete, a
send) and every product a few events on the bus; aiobotocore spends about 3 ms of CPU on
each such call, this about 1.3 ms (`bench/README.md`), much of it the socket's. The protocol
needs no model: a call's parameters are its JSON body as botocore would serialise them
(strings, numbers, lists and maps of them; bytes, a message attribute's binary value, go
as base64), and the answer's body is what botocore would return, once a received message's
binary attribute values are bytes again (`received_messages`; nothing read is a timestamp).

It behaves as the aiobotocore client it stands in for (`aws_http`): the endpoint that client
resolved, its credentials, timeouts, retries and exceptions, with the service's error code
as botocore parses it (SQS's legacy code, `AWS.SimpleQueueService.NonExistentQueue`, where
SQS sends one). A call inside a trace gets the instrumentor's CLIENT span
`<Service>.<Operation>`, except the calls that have messaging spans of ours (`aws_spans`).
Queue and topic set-up, lookups and probes stay on the aiobotocore clients.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiobotocore.session import AioSession
from botocore.exceptions import ClientError
from multidict import CIMultiDictProxy
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from ingest_common.aws_http import CallSettings, ServiceApi


@dataclass(frozen=True, slots=True)
class JsonService:
    """What a JSON-protocol service's requests say about it."""

    name: str  # the instrumentor's service id: rpc.service, and the spans' prefix
    signing_name: str
    target_prefix: str  # X-Amz-Target: <prefix>.<Operation>
    json_version: str


SQS = JsonService("SQS", "sqs", "AmazonSQS", "1.0")
EVENTBRIDGE = JsonService("EventBridge", "events", "AWSEvents", "1.1")


class JsonApi(ServiceApi):
    """Calls ``service`` at the endpoint and region of ``client`` (its aiobotocore client),
    with the credentials of the ``session`` that made it; open with `async with`."""

    def __init__(
        self, session: AioSession, client: Any, service: JsonService, calls: CallSettings
    ) -> None:
        super().__init__(session, client, service.name, service.signing_name, calls)
        self._target_prefix = service.target_prefix
        self._content_type = f"application/x-amz-json-{service.json_version}"

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``operation`` with ``params`` (botocore's names and shapes)."""
        body = json.dumps(params, default=_blob).encode()
        headers = {
            "content-type": self._content_type,
            "x-amz-target": f"{self._target_prefix}.{operation}",
        }

        async def once(span: trace.Span | None) -> dict[str, Any]:
            content = await self.post(headers, body, span, partial(json_error, operation))
            answer: dict[str, Any] = json.loads(content) if content else {}
            return answer

        return await self.traced(
            f"{self.service}.{operation}",
            lambda: self._call_attributes(operation, params),
            self.url,
            once,
        )

    def _call_attributes(self, operation: str, params: dict[str, Any]) -> dict[str, AttributeValue]:
        attributes = self.span_attributes(operation)
        if queue_url := params.get("QueueUrl"):  # as the instrumentor's SQS extension
            attributes["aws.queue_url"] = queue_url
            attributes["messaging.system"] = "aws.sqs"
            attributes["messaging.url"] = queue_url
            attributes["messaging.destination"] = queue_url.rsplit("/", 1)[-1]
        return attributes


def received_messages(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """ReceiveMessage's messages as botocore returns them: binary attribute values as bytes."""
    messages: list[dict[str, Any]] = answer.get("Messages", [])
    for message in messages:
        for value in message.get("MessageAttributes", {}).values():
            if "BinaryValue" in value:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
            if "BinaryListValues" in value:
                value["BinaryListValues"] = [
                    base64.b64decode(item) for item in value["BinaryListValues"]
                ]
    return messages


def _blob(value: object) -> str:
    """A blob parameter, as botocore serialises one in JSON: base64."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_error(
    operation: str, status: int, content: bytes, headers: CIMultiDictProxy[str]
) -> ClientError:
    """The `ClientError` botocore's JSON parser makes of an error answer."""
    try:
        parsed = json.loads(content) if content else {}
    except ValueError:
        parsed = {}  # not the service's answer (a proxy's page): the status is the code
    if not isinstance(parsed, dict):
        parsed = {}
    code = str(parsed.get("__type") or parsed.get("code") or status).rpartition("#")[2]
    # Services that kept their query-protocol codes (SQS) name the old code in a header.
    if query_error := headers.get("x-amzn-query-error"):
        code = query_error.partition(";")[0] or code
    response: Any = {
        "Error": {"Code": code, "Message": str(parsed.get("message", parsed.get("Message", "")))},
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": headers.get("x-amzn-RequestId", ""),
        },
    }
    return ClientError(response, operation)
