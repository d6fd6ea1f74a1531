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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree

from aiobotocore.session import AioSession
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from ingest_common.aws_http import CallSettings, SignedHttp
from ingest_common.s3_request import client_error
from ingest_common.sigv4 import sign

_VERSION = "2010-03-31"
_NS = {"sns": f"http://sns.amazonaws.com/doc/{_VERSION}/"}
_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


class SnsPublisher(SignedHttp):
    """Publishes to SNS at the endpoint and region of ``sns`` (the aiobotocore client), with the
    credentials of the ``session`` that made it; open with `async with`."""

    def __init__(self, session: AioSession, sns: Any, calls: CallSettings) -> None:
        super().__init__(session, calls)
        self.region: str = sns.meta.region_name
        endpoint = urlsplit(sns.meta.endpoint_url)
        self._host = endpoint.netloc
        self._url = f"{endpoint.scheme}://{endpoint.netloc}/"
        self._server: dict[str, AttributeValue] = {"server.address": endpoint.hostname or ""}
        if endpoint.port is not None:
            self._server["server.port"] = endpoint.port

    async def publish_batch(
        self, topic_arn: str, entries: Sequence[Mapping[str, Any]]
    ) -> dict[str, list[dict[str, str]]]:
        """PublishBatch of ``entries`` (botocore's shape: Id, Message, MessageAttributes of
        strings); its Successful and Failed members, as botocore returns them."""
        body = urlencode(publish_batch_form(topic_arn, entries)).encode()
        return await self.traced(
            "SNS.PublishBatch",
            lambda: {
                "rpc.system": "aws-api",
                "rpc.service": "SNS",
                "rpc.method": "PublishBatch",
                "cloud.region": self.region,
                **self._server,
                "messaging.system": "aws.sns",
                "messaging.destination.name": topic_arn.rpartition(":")[2],
            },
            self._url,
            lambda span: self._once(body, span),
        )

    async def _once(self, body: bytes, span: trace.Span | None) -> dict[str, list[dict[str, str]]]:
        signed = sign(
            "POST",
            self._host,
            "/",
            {"content-type": _CONTENT_TYPE},
            body,
            credentials=await self.credentials(),
            region=self.region,
            now=datetime.now(UTC),
            service="sns",
        )
        async with self.http.post(self._url, data=body, headers=signed) as reply:
            content = await reply.read()
            if span is not None:
                span.set_attribute("http.status_code", reply.status)
                if request_id := reply.headers.get("x-amzn-RequestId"):
                    span.set_attribute("aws.request_id", request_id)
            if reply.status >= 300:
                error = client_error("PublishBatch", reply.status, content, reply.headers)
                if span is not None:
                    span.set_attribute("error.type", error.response["Error"]["Code"])
                    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
                raise error
            return publish_batch_result(content)


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
