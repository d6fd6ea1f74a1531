"""CLIENT spans for the AWS calls (aiobotocore), from opentelemetry-instrumentation-botocore.

`AiobotocoreInstrumentor` wraps `AioBaseClient._make_api_call` once for the process: every
call of every client gets a CLIENT span `<Service>.<Operation>` (`S3.GetObject`,
`SQS.ReceiveMessage`) with `rpc.system` aws-api, `rpc.service`, `rpc.method`,
`cloud.region`, `server.address`/`server.port`, `aws.request_id`, `http.status_code`,
`retry_attempts` and, for SQS, the queue (`aws.queue_url`, `messaging.destination`). The
calls that skip botocore (`s3_put`, `aws_json`, `aws_query`, through `aws_http`) make the
same spans under the same rules.

Propagation. The instrumentor adds the X-Ray header (`X-Amzn-Trace-Id`) to each HTTP
request, which SQS keeps as the message's `AWSTraceHeader`: we do not read it. Its SQS
extension injects nothing into messages; the trace context of a message is the one
`Aws.send` puts in its attributes (tracing.py), which the consumer reads. Its SNS
extension would inject the current context into Publish/PublishBatch message attributes,
but the outbox publishes outside any trace, so there is none to inject.

Two rules the instrumentor has no switch for are kept by the tracer it is given
(`_InTraceOnlyTracer`), so they hold whatever sampler and tracer provider are installed:

- An AWS call never starts a trace: a call outside one gets no span (the long polls and
  visibility heartbeats of an idle consumer, start-up lookups, the outbox's publishes).
- SendMessage, SendMessageBatch and DeleteMessageBatch have messaging spans of our own
  (`send <queue>`, `settle <queue>`, see tracing.py and the consumer), so no second one.

A response hook names the AWS error code of a failed call (`error.type`) and keeps a 404
of an S3 HEAD/GET from marking the span as an error: it is an answer (the object is not
there), not a failure of the call.

A PUT or GET sent from a blocking thread (`s3_put_blocking`: a render worker's,
`Aws.put_many`'s and `get_many`'s) has no tracer at hand; `draw_object_span` draws its span
afterwards from its outcome's timings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

from ingest_common.s3_put_blocking import GetOutcome, PutOutcome
from ingest_common.s3_request import S3Endpoint
from ingest_common.telemetry.tracing import tracer

# The span names (`<Service>.<Operation>`) of the calls that have our messaging spans.
MESSAGING_CALLS = frozenset({"SQS.SendMessage", "SQS.SendMessageBatch", "SQS.DeleteMessageBatch"})
_S3_READS = ("Head", "Get")


def instrument_aws(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Instrument aiobotocore for the whole process; later calls do nothing.

    The spans go to `tracer_provider`, or to the global one (looked up when a span is
    made, so it may be installed after this).
    """
    # Imported here, as the first Aws opens: importing `ingest_common.aws` stays light.
    from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor

    instrumentor = AiobotocoreInstrumentor()  # type: ignore[no-untyped-call]
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    instrumentor.instrument(
        tracer_provider=_InTraceOnlyProvider(tracer_provider),
        request_hook=_request_hook,
        response_hook=_response_hook,
    )


def _traced(name: str, context: Context | None) -> bool:
    """Whether a call gets a span: inside a trace, and not one of our messaging calls."""
    return (
        name not in MESSAGING_CALLS and trace.get_current_span(context).get_span_context().is_valid
    )


class _InTraceOnlyProvider(trace.TracerProvider):
    """The instrumentor's tracer provider: the real one's tracers, behind `_traced`."""

    def __init__(self, provider: trace.TracerProvider | None) -> None:
        self._provider = provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        return _InTraceOnlyTracer(
            trace.get_tracer(
                instrumenting_module_name,
                instrumenting_library_version,
                self._provider,
                schema_url,
                attributes,
            )
        )


class _InTraceOnlyTracer(trace.Tracer):
    """Gives the invalid span (records nothing, made current nowhere) to an untraced call."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        if not _traced(name, context):
            return INVALID_SPAN
        return self._tracer.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    # The API's own decorator of `Tracer.start_as_current_span`, which the override needs.
    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[Span]:
        if not _traced(name, context):
            yield INVALID_SPAN
            return
        with self._tracer.start_as_current_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        ) as span:
            yield span


def _request_hook(span: Span, service: str, operation: str, params: Any) -> None:
    if service != "s3" or not span.is_recording() or not isinstance(params, Mapping):
        return
    if bucket := params.get("Bucket"):
        span.set_attribute("aws.s3.bucket", str(bucket))
    if key := params.get("Key"):
        span.set_attribute("aws.s3.key", str(key))


def _response_hook(span: Span, service: str, operation: str, result: Any) -> None:
    if not span.is_recording() or not isinstance(result, Mapping):
        return
    status = result.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not isinstance(status, int) or status < 400:
        return
    if status == 404 and service == "s3" and operation.startswith(_S3_READS):
        # The instrumentor has marked it as an error; only OK can replace that.
        span.set_status(Status(StatusCode.OK))
        return
    span.set_attribute("error.type", str(result.get("Error", {}).get("Code") or status))


def draw_object_span(
    call: PutOutcome | GetOutcome, endpoint: S3Endpoint, attributes: types.Attributes = None
) -> None:
    """The CLIENT span `s3_put` would have drawn around ``call`` (a PUT or a GET), under the
    current span, from its timings; ``attributes`` say what the object is (a wrapping span
    would cost as much again). Ask `tracing.call_spans_under` first: this draws it whatever
    the trace keeps."""
    operation = "PutObject" if isinstance(call, PutOutcome) else "GetObject"
    merged = endpoint.span_attributes(operation, call.host, call.bucket, call.key)
    merged.update(attributes or {})
    if call.status:
        merged["http.status_code"] = call.status
    if call.request_id:
        merged["aws.request_id"] = call.request_id
    if call.retries:
        merged["retry_attempts"] = call.retries
    span = tracer().start_span(
        f"S3.{operation}", kind=SpanKind.CLIENT, start_time=call.started_ns, attributes=merged
    )
    if call.error is not None:
        record_object_error(span, operation, call.status, call.error)
    span.end(end_time=call.ended_ns)


def record_object_error(span: Span, operation: str, status: int, error: Exception) -> None:
    """Mark an S3 object call's span with how it failed (S3's error code, or the exception's
    type). A GET's 404 is an answer (the object is not there), not a failure: as botocore's
    S3 reads are marked (`_response_hook`)."""
    if operation == "GetObject" and status == 404:
        span.set_status(Status(StatusCode.OK))
        return
    if isinstance(error, ClientError):
        span.set_attribute("error.type", error.response["Error"]["Code"])
    else:
        span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
