"""SNS's PublishBatch without botocore (ingest_common.aws_query): its form is botocore's own
serialisation, what it publishes reaches a subscriber as botocore's publish does, and its
failures are botocore's exceptions."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.serialize import create_serializer
from botocore.session import get_session
from ingest_common.aws import Aws
from ingest_common.aws_query import publish_batch_form, publish_batch_result
from ingest_devstack.local import refused_port

from tests.integration.pipeline import subscribe_to_events

TOPIC = "arn:aws:sns:us-east-1:123456789012:ingest-events"


def entries(*bodies: str) -> list[dict[str, Any]]:
    return [
        {
            "Id": str(i),
            "Message": body,
            "MessageAttributes": {
                "type": {"DataType": "String", "StringValue": "product.ready"},
                "subject": {"DataType": "String", "StringValue": f"subject {i} – ü&=+"},
            },
        }
        for i, body in enumerate(bodies)
    ]


def test_the_form_is_botocores_serialisation() -> None:
    model = get_session().get_service_model("sns").operation_model("PublishBatch")
    batch = entries('{"a": 1}', "x & y = z")
    params = {"TopicArn": TOPIC, "PublishBatchRequestEntries": batch}
    botocores = create_serializer("query").serialize_to_request(params, model)["body"]
    assert publish_batch_form(TOPIC, batch) == botocores


def test_the_answer_is_read_as_botocore_reads_it() -> None:
    answer = b"""<PublishBatchResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">
      <PublishBatchResult>
        <Successful><member><Id>0</Id><MessageId>m-0</MessageId></member></Successful>
        <Failed><member><Id>1</Id><Code>InvalidParameter</Code><Message>too long</Message>
          <SenderFault>true</SenderFault></member></Failed>
      </PublishBatchResult>
      <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>
    </PublishBatchResponse>"""
    assert publish_batch_result(answer) == {
        "Successful": [{"Id": "0", "MessageId": "m-0"}],
        "Failed": [
            {"Id": "1", "Code": "InvalidParameter", "Message": "too long", "SenderFault": "true"}
        ],
    }


async def test_published_events_reach_a_subscriber_as_botocores_do(aws: Aws) -> None:
    url = await subscribe_to_events(aws)
    topic = await aws.topic_arn(aws.settings.events_topic)
    ours = await aws.sns_publisher.publish_batch(topic, entries('{"n": 1}', '{"n": 2}'))
    assert sorted(s["Id"] for s in ours["Successful"]) == ["0", "1"]
    assert ours["Failed"] == []
    await aws.sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries('{"n": 3}'))  # type: ignore[arg-type]

    received = (
        await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
    )["Messages"]
    by_body = {m["Body"]: m["MessageAttributes"] for m in received}
    assert set(by_body) == {'{"n": 1}', '{"n": 2}', '{"n": 3}'}
    # Ours carry their attributes exactly as botocore's does (subscriptions filter on them).
    assert by_body['{"n": 1}'] == by_body['{"n": 3}']
    assert by_body['{"n": 2}']["subject"]["StringValue"] == "subject 1 – ü&=+"


async def test_a_missing_topic_is_botocores_client_error(aws: Aws) -> None:
    missing = TOPIC.replace("ingest-events", "no-such-topic")
    with pytest.raises(ClientError) as ours:
        await aws.sns_publisher.publish_batch(missing, entries("x"))
    with pytest.raises(ClientError) as botocores:
        await aws.sns.publish_batch(TopicArn=missing, PublishBatchRequestEntries=entries("x"))  # type: ignore[arg-type]
    assert ours.value.response["Error"]["Code"] == botocores.value.response["Error"]["Code"]
    assert ours.value.operation_name == botocores.value.operation_name == "PublishBatch"


async def test_an_unreachable_endpoint_is_botocores_connection_error(aws: Aws) -> None:
    with refused_port() as port:
        closed = f"http://127.0.0.1:{port}"
        settings = aws.settings.model_copy(
            update={"aws_endpoint_url": closed, "aws_max_attempts": 2}
        )
        async with Aws(settings) as unreachable:
            with pytest.raises(EndpointConnectionError):
                await unreachable.sns_publisher.publish_batch(TOPIC, entries("x"))
