"""CLIENT spans for S3 and SQS calls made with aiobotocore.

opentelemetry-instrumentation-botocore patches botocore's synchronous
`BaseClient._make_api_call`, which aiobotocore overrides with a coroutine, so it sees
nothing of our calls. botocore's event hooks are called by aiobotocore too:
`before-call.<service>.<operation>` starts a span (not made current: nothing nests in an
HTTP call), `after-call` and `after-call-error` end it.

Only calls made inside a trace get a span: the long polls and heartbeats of an idle
consumer are not traced. SQS sends and deletes have messaging spans of their own
(`send <queue>`, `settle <queue>`, see tracing.py), so they get no second one.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ingest_common.telemetry.tracing import tracer

_SPAN_KEY = "ingest_otel_span"
MESSAGING_OPERATIONS = frozenset({"SendMessage", "SendMessageBatch", "DeleteMessageBatch"})


def instrument_client(client: Any) -> None:
    """Register the span hooks on one aiobotocore client (idempotent per client)."""
    events = client.meta.events
    events.register("before-call", _before_call, unique_id="ingest-otel-before")
    events.register("after-call", _after_call, unique_id="ingest-otel-after")
    events.register("after-call-error", _after_call_error, unique_id="ingest-otel-error")


def _before_call(model: Any, params: Any, context: dict[str, Any], **_: Any) -> None:
    operation = str(model.name)
    if operation in MESSAGING_OPERATIONS or not trace.get_current_span().is_recording():
        return
    service = str(model.service_model.service_id)
    attributes: dict[str, Any] = {
        "rpc.system": "aws-api",
        "rpc.service": service,
        "rpc.method": operation,
    }
    if region := context.get("client_region"):
        attributes["cloud.region"] = region
    body = params.get("body") if isinstance(params, dict) else None
    url = params.get("url") if isinstance(params, dict) else None
    if service == "S3" and isinstance(url, str):
        attributes["url.full"] = url.split("?", 1)[0]
    if isinstance(body, bytes | bytearray):
        attributes["http.request.body.size"] = len(body)
    context[_SPAN_KEY] = tracer().start_span(
        f"{service}.{operation}", kind=SpanKind.CLIENT, attributes=attributes
    )


def _after_call(http_response: Any, parsed: Any, context: dict[str, Any], **_: Any) -> None:
    span = context.pop(_SPAN_KEY, None)
    if span is None:
        return
    status = int(getattr(http_response, "status_code", 0) or 0)
    span.set_attribute("http.response.status_code", status)
    metadata = parsed.get("ResponseMetadata", {}) if isinstance(parsed, dict) else {}
    if request_id := metadata.get("RequestId"):
        span.set_attribute("aws.request_id", str(request_id))
    if status >= 400:
        error = parsed.get("Error", {}) if isinstance(parsed, dict) else {}
        code = str(error.get("Code") or status)
        span.set_attribute("error.type", code)
        # A 404 of a HEAD/GET is an answer, not a failure of the call.
        if status != 404:
            span.set_status(Status(StatusCode.ERROR, code))
    span.end()


def _after_call_error(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    span = context.pop(_SPAN_KEY, None)
    if span is None:
        return
    span.record_exception(exception)
    span.set_attribute("error.type", type(exception).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exception)[:200]))
    span.end()
