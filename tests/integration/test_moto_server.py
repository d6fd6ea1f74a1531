"""The local stack's moto server keeps connections open, as S3 and SQS do, and counts the
requests it answers.

werkzeug's server (behind `python -m moto.server`) closes every connection: each call of the
tests, the demo and the benchmarks would pay a TCP connect and moto a new thread.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections import Counter

from ingest_common.aws import Aws
from ingest_devstack.local import requests_answered


def test_two_requests_share_one_connection(moto_endpoint: str) -> None:
    url = urllib.parse.urlsplit(moto_endpoint)
    assert url.hostname is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    sockets = []
    try:
        for _ in range(2):
            connection.request("GET", "/moto-api/")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert (response.getheader("Connection") or "").lower() != "close"
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert sockets[0] is not None
    assert sockets[0] is sockets[1]


async def test_the_server_counts_the_requests_it_answers_by_service_and_operation(
    aws: Aws,
) -> None:
    endpoint = aws.settings.aws_endpoint_url
    assert endpoint is not None
    before = requests_answered(endpoint)
    bucket = aws.settings.uploads_bucket
    await aws.send_bodies(aws.settings.render_queue, ["one", "two"])  # one batch
    await aws.put_bytes(bucket, "a/b.svg", b"<svg/>", content_type="image/svg+xml")
    await aws.put_bytes(bucket, "a/c.svg", b"<svg/>", content_type="image/svg+xml")
    await aws.get_bytes(bucket, "a/b.svg")
    await aws.s3.put_object_tagging(
        Bucket=bucket, Key="a/b.svg", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]}
    )
    topic = await aws.topic_arn(aws.settings.events_topic)
    await aws.sns_publisher.publish_batch(topic, [{"Id": "0", "Message": "{}"}])
    entry = {"Source": "test", "DetailType": "t", "Detail": "{}"}
    await aws.bus.call(
        "PutEvents", {"Entries": [{**entry, "EventBusName": aws.settings.event_bus}]}
    )
    counted = Counter(requests_answered(endpoint))
    counted.subtract(before)
    assert +counted == {
        "sqs GetQueueUrl": 1,  # looked up once, then cached
        "sns ListTopics": 1,
        "sqs SendMessageBatch": 1,
        "s3 PUT object": 2,
        "s3 GET object": 1,
        "s3 PUT object?tagging": 1,
        "sns PublishBatch": 1,
        "events PutEvents": 1,
    }
