"""AWS Signature Version 4 for one request without a query string, as botocore signs it: an
S3 object's (S3SigV4Auth) or a JSON-protocol call's, always to `/` (SigV4Auth).

The hot path makes about a dozen such calls per image; botocore spends about 1.5 ms of CPU
per call on machinery they do not need (`bench/README.md`), this about 0.05 ms. The payload
is always SHA-256-signed (S3 then checks the body against it), the URI is the
already-encoded path (S3 does not normalise it), and the signing key is kept per day.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
S3 = "s3"  # the signing name of S3; SQS's is "sqs", EventBridge's "events"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


def object_path(bucket: str | None, key: str) -> str:
    """The encoded path of an object: /bucket/key (path style) or /key (virtual-hosted)."""
    encoded = quote(key, safe="/~")
    return f"/{bucket}/{encoded}" if bucket else f"/{encoded}"


def sign(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    credentials: Credentials,
    region: str,
    now: datetime,
    service: str = S3,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus the date, payload hash, token and Authorization.

    ``path`` is the encoded path (`object_path`, or `/`); ``host`` as in the Host header (with
    a port unless it is the scheme's default); ``now`` in UTC; ``service`` the signing name.
    """
    timestamp = now.strftime("%Y%m%dT%H%M%SZ")
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = timestamp
    signed["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            "",  # no query string
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            signed["x-amz-content-sha256"],
        ]
    )
    scope = f"{timestamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, timestamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _signing_key(credentials.secret_key, timestamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    signed["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del signed["host"]  # the HTTP client sends it
    return signed


@lru_cache(maxsize=16)
def _signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
