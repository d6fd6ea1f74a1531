"""SNS's PublishBatch over aiohttp, signed by `sigv4`: the AWS query protocol without botocore,
for the outbox's one call per batch of events (EventBridge's PutEvents is `aws_json`'s).

aiobotocore spent about a fifth of the batcher's CPU on it when many sets arrive at once
(py-spy, `bench/e2e.py --scenario many --profile`). The request is a form: the entries as
botocore serialises PublishBatch's (`PublishBatchRequestEntries.member.N`, each message
attribute as `MessageAttributes.entry.M.Name` and `.Value.DataType`/`.Value.StringValue`);
the answer is the XML whose Successful and Failed members botocore returns. It behaves as
the aiobotocore client (`aws_http`): endpoint, region, credentials, timeouts, retries,
exceptions (`ClientError` with SNS's code: `NotFound` for a missing topic), and the span
`SNS.PublishBatch` only inside a trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

from aiobotocore.session import AioSession
from opentelemetry import trace

from ingest_common.aws_http import CallSettings, ServiceApi
from ingest_common.s3_request import client_error

_VERSION = "2010-03-31"
_NS = {"sns": f"http://sns.amazonaws.com/doc/{_VERSION}/"}
_HEADERS = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}


class SnsPublisher(ServiceApi):
    """Publishes to SNS at the endpoint and region of ``sns`` (the aiobotocore client), with the
    credentials of the ``session`` that made it; open with `async with`."""

    def __init__(self, session: AioSession, sns: Any, calls: CallSettings) -> None:
        super().__init__(session, sns, "SNS", "sns", calls)

    async def publish_batch(
        self, topic_arn: str, entries: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[dict[str, str]]]:
        """PublishBatch of ``entries`` (botocore's shape: Id, Message, MessageAttributes of
        strings); its Successful and Failed members, as botocore returns them (their fields
        as text)."""
        body = urlencode(publish_batch_form(topic_arn, entries)).encode()
        error = partial(client_error, "PublishBatch")

        async def once(span: trace.Span | None) -> dict[str, list[dict[str, str]]]:
            return publish_batch_result(await self.post(_HEADERS, body, span, error))

        return await self.traced(
            "SNS.PublishBatch",
            lambda: {
                **self.span_attributes("PublishBatch"),
                "messaging.system": "aws.sns",
                "messaging.destination.name": topic_arn.rpartition(":")[2],
            },
            self.url,
            once,
        )


def publish_batch_form(topic_arn: str, entries: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """PublishBatch's parameters as the query protocol's form fields."""
    form = {"Action": "PublishBatch", "Version": _VERSION, "TopicArn": topic_arn}
    for n, entry in enumerate(entries, start=1):
        member = f"PublishBatchRequestEntries.member.{n}"
        form[f"{member}.Id"] = entry["Id"]
        form[f"{member}.Message"] = entry["Message"]
        attributes = entry.get("MessageAttributes", {}).items()
        for m, (name, value) in enumerate(attributes, start=1):
            attribute = f"{member}.MessageAttributes.entry.{m}"
            form[f"{attribute}.Name"] = name
            form[f"{attribute}.Value.DataType"] = value["DataType"]
            form[f"{attribute}.Value.StringValue"] = value["StringValue"]
    return form


def publish_batch_result(content: bytes) -> dict[str, list[dict[str, str]]]:
    """PublishBatch's answer: each Successful and Failed member's fields, by name."""
    root = ElementTree.fromstring(content)
    return {
        part: [
            {field.tag.rpartition("}")[2]: field.text or "" for field in member}
            for member in root.iterfind(f".//sns:{part}/sns:member", _NS)
        ]
        for part in ("Successful", "Failed")
    }
