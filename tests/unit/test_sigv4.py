"""Our SigV4 signature of an S3 object request (S3SigV4Auth) or a JSON-protocol call
(SigV4Auth) equals botocore's for the same request at the same instant: the same canonical
request, signed headers and signature."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from ingest_common.sigv4 import Credentials, object_path, sign

NOW = datetime(2026, 12, 2, 17, 4, 5, tzinfo=UTC)


def botocore_authorization(
    method: str, url: str, headers: dict[str, str], body: bytes, creds: Credentials, region: str
) -> str:
    """What botocore computes for this request, given the headers our signer sends."""
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token), "s3", region
    )
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    signed = auth.signed_headers(auth.headers_to_sign(request))
    return (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )


@pytest.mark.parametrize(
    ("endpoint", "host", "bucket", "key"),
    [
        ("http://127.0.0.1:4566", "127.0.0.1:4566", "ingest-previews", "renditions/a/64.png"),
        (
            "https://ingest-uploads.s3.eu-west-1.amazonaws.com",
            "ingest-uploads.s3.eu-west-1.amazonaws.com",
            None,
            "uploads/acme/Ein Set – grün+blau=~(1).zip",
        ),
    ],
)
@pytest.mark.parametrize("token", [None, "session-token/with+chars="])
def test_our_signature_is_botocores(
    endpoint: str, host: str, bucket: str | None, key: str, token: str | None
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = b"<svg xmlns='http://www.w3.org/2000/svg'/>" * 3
    headers = {
        "Content-Type": "image/svg+xml",
        "Cache-Control": "public,  max-age=31536000,   immutable",
        "x-amz-meta-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    path = object_path(bucket, key)
    sent = sign("PUT", host, path, headers, body, credentials=creds, region="eu-west-1", now=NOW)

    unsigned = {k: v for k, v in sent.items() if k != "authorization"}
    expected = botocore_authorization("PUT", endpoint + path, unsigned, body, creds, "eu-west-1")
    assert sent["authorization"] == expected
    assert ("x-amz-security-token" in sent) == (token is not None)


def test_paths_are_encoded_once_as_botocore_encodes_keys() -> None:
    assert object_path("b", "a b/ü+c~d.png") == "/b/a%20b/%C3%BC%2Bc~d.png"
    assert object_path(None, "k") == "/k"


@pytest.mark.parametrize(("service", "target"), [("sqs", "AmazonSQS"), ("events", "AWSEvents")])
def test_a_json_call_is_signed_as_botocore_signs_it(service: str, target: str) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "token")
    host = f"{service}.eu-west-1.amazonaws.com"
    body = b'{"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/1/q", "MaxNumberOfMessages": 10}'
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"{target}.Op"}
    sent = sign(
        "POST", host, "/", headers, body, credentials=creds, region="eu-west-1", now=NOW,
        service=service,
    )  # fmt: skip

    request = AWSRequest(
        method="POST",
        url=f"https://{host}/",
        headers={k: v for k, v in sent.items() if k != "authorization"},
        data=body,
    )
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    auth = SigV4Auth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token), service, "eu-west-1"
    )
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    signed = auth.signed_headers(auth.headers_to_sign(request))
    assert sent["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={auth.scope(request)}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
