"""moto's WSGI application, served by gunicorn in the local stack (see `local.moto_server`).

`python -m moto.server` serves it with werkzeug's development server, which closes the
connection after every response: each S3 or SQS call then pays a TCP connect in the client
and a new thread in moto, which S3 and SQS (keep-alive) never make a client pay.

Three of moto's costs are cut here, with the same answers (`speed_up_moto`): moto shares this
machine's two CPUs with everything it serves, one GIL for every call, so its CPU per image
sets the pipeline's wall time in the benchmarks and the tests (py-spy of moto 5.2.5 under a
500-image set, `bench/README.md`). In AWS none of it is on ours.

The app also counts the requests it answers, by service and operation (`CountedRequests`):
AWS bills most of them one by one, so `bench/e2e.py` reports them per image.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import moto
import moto.backends
import moto.sqs.models
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def speed_up_moto() -> None:
    """Make three of moto's per-request costs constant; every answer stays the same.

    - Finding a request's backend lists moto's package folder and stats every entry, under
      the dispatcher's lock, on every request: the folder is listed once instead.
    - Each message a ReceiveMessage returns checks its retention period by computing every
      attribute of its queue, three of them counting the queue's messages: O(messages) per
      message, so a 500-message queue costs O(n²) to drain. The period is read directly.
    - SQS's clock (every message's visibility and delay, on every scan) built two datetimes
      per reading: it reads time.time(), the same seconds since the epoch.
    """
    modules = tuple(moto.backends.list_of_moto_modules())

    def list_of_moto_modules() -> Iterable[str]:
        return modules

    replacements: tuple[tuple[object, str, object], ...] = (
        (moto.backends, "list_of_moto_modules", list_of_moto_modules),
        (moto.sqs.models, "unix_time", _unix_time),
        (moto.sqs.models, "unix_time_millis", _unix_time_millis),
        (
            moto.sqs.models.SQSBackend,
            "is_message_valid_based_on_retention_period",
            _within_retention,
        ),
    )
    for owner, name, replacement in replacements:
        if not hasattr(owner, name):  # moto moved it: setattr would add a name nothing calls
            raise RuntimeError(f"moto {moto.__version__} has no {name}: update speed_up_moto")
        setattr(owner, name, replacement)


_moto_unix_time = vars(moto.sqs.models)["unix_time"]


def _unix_time(dt: datetime | None = None) -> float:
    return time.time() if dt is None else float(_moto_unix_time(dt))


def _unix_time_millis(dt: datetime | None = None) -> float:
    return _unix_time(dt) * 1000.0


def _within_retention(self: moto.sqs.models.SQSBackend, queue_name: str, message: Any) -> bool:
    period = int(vars(self.get_queue(queue_name))["message_retention_period"])
    return bool(period + message.sent_timestamp / 1000 > time.time())


# The service a SigV4 request names in its credential scope (header or presigned query).
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_PRESIGNED_SCOPE = re.compile(r"X-Amz-Credential=[^&]+%2F\d{8}%2F[^%]+%2F([^%]+)%2Faws4_request")
# S3 sub-resources that name an operation of their own (PutObjectTagging, DeleteObjects, ...).
_S3_SUBRESOURCES = ("tagging", "delete", "uploads", "uploadId", "list-type", "notification")

StartResponse = Callable[..., Any]


class CountedRequests:
    """WSGI middleware: counts every request by service and operation ("sqs ReceiveMessage",
    "s3 PUT object"), and answers `GET /_ingest/requests` with the counts so far, as JSON (no
    S3 bucket can be called `_ingest`)."""

    PATH = "/_ingest/requests"

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()  # gunicorn serves requests on many threads

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == self.PATH:
            with self._lock:
                body = json.dumps(dict(self.counts)).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        name = operation(environ)
        with self._lock:
            self.counts[name] += 1
        return self.app(environ, start_response)


def operation(environ: dict[str, Any]) -> str:
    """The name a WSGI request to moto is counted under, "<service> <operation>" (a form body
    it reads is left for moto to read again)."""
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/moto-api/"):
        return "moto-api"  # the emulator's own (reset, recorder): no AWS request
    query = environ.get("QUERY_STRING", "")
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", "")) or _PRESIGNED_SCOPE.search(query)
    service = scope.group(1) if scope else "unsigned"
    if target := environ.get("HTTP_X_AMZ_TARGET"):  # JSON protocol: SQS, EventBridge
        return f"{service} {target.rpartition('.')[2]}"
    method = environ.get("REQUEST_METHOD", "GET")
    keys = parse_qs(query, keep_blank_values=True)
    if service in ("s3", "unsigned"):
        kind = "object" if "/" in path.strip("/") else "bucket"
        sub = next((f"?{k}" for k in _S3_SUBRESOURCES if k in keys), "")
        return f"s3 {method} {kind}{sub}"
    action = keys.get("Action")
    if action is None and environ.get("CONTENT_TYPE", "").startswith(
        "application/x-www-form-urlencoded"
    ):  # query protocol: SNS, SQS's old one
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    return f"{service} {action[0] if action else method}"


speed_up_moto()
app = CountedRequests(DomainDispatcherApplication(create_backend_app))
