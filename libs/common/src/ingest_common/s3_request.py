"""What a request for one S3 object is, whoever sends it: where it goes (`S3Endpoint`), which
errors are worth another attempt and after how long, and the `ClientError` an error answer
becomes, as botocore's standard retry mode and parser make them. Shared by the event loop's
client (`s3_put`) and the render workers' (`s3_put_blocking`); light to import, as a render
worker needs it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError
from opentelemetry.util.types import AttributeValue

from ingest_common.sigv4 import object_path

# Worth another attempt, as botocore's standard retry mode judges them (its transient and
# throttling codes; S3's InternalError besides), whichever service answered (`aws_json` too).
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_RETRY_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
_MAX_BACKOFF = 20.0
_CODE = re.compile(rb"<Code>([^<]+)</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]*)</Message>")


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where object requests go: the endpoint an aiobotocore S3 client resolved (picklable, so
    render workers put renditions at the same place: `s3_put_blocking`)."""

    scheme: str
    host: str  # host[:port]
    region: str
    # Virtual-hosted addressing on AWS's own endpoints, as botocore's default does; path
    # style elsewhere (moto, LocalStack, a VPC endpoint URL) and for dotted bucket names.
    virtual: bool

    @classmethod
    def of(cls, endpoint_url: str, region: str) -> S3Endpoint:
        endpoint = urlsplit(endpoint_url)
        hostname = endpoint.hostname or ""
        return cls(endpoint.scheme, endpoint.netloc, region, hostname.endswith("amazonaws.com"))

    def address(self, bucket: str, key: str) -> tuple[str, str]:
        """(host, encoded path) of an object."""
        if self.virtual and "." not in bucket:
            return f"{bucket}.{self.host}", object_path(None, key)
        return self.host, object_path(bucket, key)

    def span_attributes(
        self, operation: str, host: str, bucket: str, key: str
    ) -> dict[str, AttributeValue]:
        """A CLIENT span's attributes for one object call, as the botocore instrumentor sets."""
        return {
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation,
            "cloud.region": self.region,
            "server.address": host.partition(":")[0],
            "aws.s3.bucket": bucket,
            "aws.s3.key": key,
        }


def object_headers(
    content_type: str, cache_control: str | None = None, metadata: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of an object's PUT: its type, caching and user metadata."""
    headers = {"content-type": content_type}
    if cache_control:
        headers["cache-control"] = cache_control
    for name, value in (metadata or {}).items():
        headers[f"x-amz-meta-{name}"] = value
    return headers


def backoff(retries: int) -> float:
    """Seconds before the next attempt after ``retries`` of them: full jitter, capped."""
    return random.uniform(0, min(_MAX_BACKOFF, 2.0**retries))


def client_error(
    operation: str, status: int, content: bytes, headers: Mapping[str, str]
) -> ClientError:
    code = _CODE.search(content)
    message = _MESSAGE.search(content)
    response: Any = {  # the shape botocore parses an S3 error into
        "Error": {
            "Code": code.group(1).decode() if code else str(status),
            "Message": message.group(1).decode() if message else "",
        },
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RequestId": headers.get("x-amz-request-id", ""),
        },
    }
    return ClientError(response, operation)


def worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        response = exc.response
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status in _RETRY_STATUS or response.get("Error", {}).get("Code") in _RETRY_CODES
    return True  # a connection refused, reset or timed out
