"""`ingest trace UPLOAD_ID`: an upload's spans as a tree, from collected spans.

`load_spans` reads, and tells apart by their content: the JSON lines `ingest demo`
writes (one span a line, `span_records`), the OpenTelemetry collector's `file` exporter
(one OTLP JSON ExportTraceServiceRequest a line: {"resourceSpans": [...]}), Tempo's
trace API ({"batches": [...]}, the same OTLP content, ids hex or base64) and Jaeger's
JSON ("Download JSON" in its UI, or its API: {"data": [{"spans", "processes"}]}).

`OtlpReceiver` is a tiny OTLP/HTTP receiver on loopback (POST /v1/traces, protobuf)
that appends every span to a JSON-lines file; `ingest demo` and the end-to-end tests
point the services' OTEL_EXPORTER_OTLP_ENDPOINT at it. It runs in a thread of its own,
so it keeps answering while the caller blocks (stopping the services, which flush their
last spans on the way out). Metrics and logs posted to it are accepted and dropped.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import threading
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

DEFAULT_SPANS = Path("demo-output") / "spans.jsonl"
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


# --- receiving ---------------------------------------------------------------------------


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def span_records(request: ExportTraceServiceRequest) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per span of an OTLP export request."""
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "name": span.name,
                    "kind": _KINDS.get(span.kind, str(span.kind)),
                    "service": resource.get("service.name", "?"),
                    "scope": scope_spans.scope.name,
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "status": _STATUS.get(span.status.code, "unset"),
                    "status_message": span.status.message or None,
                    "attributes": _attributes(span.attributes),
                    "links": [
                        {"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                        for link in span.links
                    ],
                    "resource": resource,
                }


class OtlpReceiver:
    """`with OtlpReceiver(path) as receiver:` then export to `receiver.endpoint`."""

    def __init__(self, path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.path = path
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver.append(span_records(request))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path in ("/v1/metrics", "/v1/logs"):
                    answer = b""  # accepted and dropped: only spans are collected here
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log on the caller's terminal

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def env(self, *, schedule_delay_ms: int | None = 500) -> dict[str, str]:
        """The variables that point an OpenTelemetry SDK at this receiver. Spans are sent
        every ``schedule_delay_ms`` (short: a demo shows them at once), or, with None, at the
        SDK's default pace, as deployed."""
        variables = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        if schedule_delay_ms is not None:
            variables["OTEL_BSP_SCHEDULE_DELAY"] = str(schedule_delay_ms)
        return variables

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        lines = [json.dumps(record, separators=(",", ":")) + "\n" for record in records]
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.writelines(lines)

    def __enter__(self) -> OtlpReceiver:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- reading ----------------------------------------------------------------------------


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any]
    links: list[dict[str, str]]
    resource: dict[str, Any] = field(default_factory=dict)
    children: list[Span] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Span:
        return cls(
            trace_id=record["trace_id"],
            span_id=record["span_id"],
            parent_span_id=record.get("parent_span_id"),
            name=record["name"],
            kind=record.get("kind", "internal"),
            service=record.get("service", "?"),
            start_ns=int(record["start_ns"]),
            end_ns=int(record["end_ns"]),
            status=record.get("status", "unset"),
            attributes=record.get("attributes", {}),
            links=record.get("links", []),
            resource=record.get("resource", {}),
        )


class SpanFormatError(ValueError):
    """The file holds no spans in any format `load_spans` reads."""


def load_spans(path: Path) -> list[Span]:
    """Every span of a file in any of the formats above (see the module's docstring)."""
    text = path.read_text(encoding="utf-8")
    try:
        documents = [json.loads(text)] if text.strip() else []
    except ValueError:  # JSON lines: one document a line
        try:
            documents = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise SpanFormatError(f"neither JSON nor JSON lines ({exc})") from None
    spans: list[Span] = []
    for document in documents:
        spans.extend(spans_of_document(document))
    return spans


def spans_of_document(document: Any) -> Iterator[Span]:
    if isinstance(document, list):
        for item in document:
            yield from spans_of_document(item)
    elif not isinstance(document, dict):
        raise SpanFormatError(f"not a span, an OTLP export or a Jaeger trace: {document!r:.60}")
    elif "resourceSpans" in document or "batches" in document:
        yield from otlp_json_spans(document)
    elif "data" in document:
        yield from jaeger_spans(document)
    elif "trace_id" in document and "span_id" in document:
        yield Span.from_record(document)
    else:
        keys = ", ".join(list(document)[:5])
        raise SpanFormatError(f"not a span, an OTLP export or a Jaeger trace (keys: {keys})")


# --- OTLP JSON (the collector's file exporter, Tempo) ------------------------------------

_OTLP_KINDS = {
    "SPAN_KIND_UNSPECIFIED": "unspecified",
    "SPAN_KIND_INTERNAL": "internal",
    "SPAN_KIND_SERVER": "server",
    "SPAN_KIND_CLIENT": "client",
    "SPAN_KIND_PRODUCER": "producer",
    "SPAN_KIND_CONSUMER": "consumer",
}
_OTLP_STATUS = {"STATUS_CODE_UNSET": "unset", "STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"}


def _otlp_id(value: Any, size: int) -> str:
    """An OTLP JSON id as hex: the spec's hex, or base64 (Tempo, protobuf's JSON mapping)."""
    text = str(value or "")
    if not text:
        return ""
    if len(text) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        return base64.b64decode(text, validate=True).hex()
    except (binascii.Error, ValueError):
        return text.lower()


def _otlp_value(value: dict[str, Any]) -> Any:
    if not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [_otlp_value(v) for v in inner.get("values", [])]
    if kind == "kvlistValue":
        return _otlp_attributes(inner.get("values", []))
    if kind == "bytesValue":
        return base64.b64decode(inner).hex()
    return inner


def _otlp_attributes(pairs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _otlp_value(pair.get("value") or {}) for pair in pairs}


def _otlp_enum(value: Any, names: dict[str, str], numbers: dict[int, str], default: str) -> str:
    if value is None:
        return default
    if isinstance(value, int) or str(value).isdigit():
        return numbers.get(int(value), str(value))
    return names.get(str(value), str(value).lower())


def otlp_json_spans(document: dict[str, Any]) -> Iterator[Span]:
    """The spans of an OTLP JSON ExportTraceServiceRequest, or of Tempo's {"batches": …}."""
    for resource_spans in document.get("resourceSpans") or document.get("batches") or []:
        resource = _otlp_attributes((resource_spans.get("resource") or {}).get("attributes", []))
        scopes = resource_spans.get("scopeSpans") or resource_spans.get(
            "instrumentationLibrarySpans", []
        )
        for scope_spans in scopes:
            for span in scope_spans.get("spans", []):
                status = span.get("status") or {}
                yield Span(
                    trace_id=_otlp_id(span["traceId"], 16),
                    span_id=_otlp_id(span["spanId"], 8),
                    parent_span_id=_otlp_id(span.get("parentSpanId"), 8) or None,
                    name=span.get("name", ""),
                    kind=_otlp_enum(span.get("kind"), _OTLP_KINDS, _KINDS, "unspecified"),
                    service=str(resource.get("service.name", "?")),
                    start_ns=int(span.get("startTimeUnixNano", 0)),
                    end_ns=int(span.get("endTimeUnixNano", 0)),
                    status=_otlp_enum(status.get("code"), _OTLP_STATUS, _STATUS, "unset"),
                    attributes=_otlp_attributes(span.get("attributes", [])),
                    links=[
                        {
                            "trace_id": _otlp_id(link.get("traceId"), 16),
                            "span_id": _otlp_id(link.get("spanId"), 8),
                        }
                        for link in span.get("links", [])
                    ],
                    resource=resource,
                )


# --- Jaeger JSON ------------------------------------------------------------------------

# Tags the OpenTelemetry → Jaeger mapping makes of span fields, not of attributes.
_JAEGER_FIELDS = {
    "span.kind",
    "otel.status_code",
    "otel.status_description",
    "otel.scope.name",
    "otel.scope.version",
    "otel.library.name",
    "otel.library.version",
    "internal.span.format",
    "error",
}


def _jaeger_id(value: Any, size: int) -> str:
    return str(value or "").lower().zfill(2 * size)


def _jaeger_tags(tags: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {tag["key"]: tag.get("value") for tag in tags}


def jaeger_spans(document: dict[str, Any]) -> Iterator[Span]:
    """The spans of Jaeger's JSON: {"data": [{"traceID", "spans", "processes"}]}."""
    for trace in document.get("data") or []:
        processes = trace.get("processes") or {}
        for span in trace.get("spans", []):
            trace_id = _jaeger_id(span.get("traceID") or trace.get("traceID"), 16)
            process = span.get("process") or processes.get(span.get("processID"), {})
            resource = {
                "service.name": process.get("serviceName", "?"),
                **_jaeger_tags(process.get("tags", [])),
            }
            tags = _jaeger_tags(span.get("tags", []))
            parent: str | None = None
            links: list[dict[str, str]] = []
            for reference in span.get("references") or []:
                ref = {
                    "trace_id": _jaeger_id(reference.get("traceID") or trace_id, 16),
                    "span_id": _jaeger_id(reference.get("spanID"), 8),
                }
                if (
                    parent is None
                    and reference.get("refType", "CHILD_OF") == "CHILD_OF"
                    and ref["trace_id"] == trace_id
                ):
                    parent = ref["span_id"]
                else:
                    links.append(ref)
            code = str(tags.get("otel.status_code", "")).lower()
            error = tags.get("error") in (True, "true")
            start_ns = int(span.get("startTime", 0)) * 1000
            yield Span(
                trace_id=trace_id,
                span_id=_jaeger_id(span.get("spanID"), 8),
                parent_span_id=parent,
                name=span.get("operationName", ""),
                kind=str(tags.get("span.kind", "internal")),
                service=str(resource["service.name"]),
                start_ns=start_ns,
                end_ns=start_ns + int(span.get("duration", 0)) * 1000,
                status="error" if error or code == "error" else (code or "unset"),
                attributes={k: v for k, v in tags.items() if k not in _JAEGER_FIELDS},
                links=links,
                resource=resource,
            )


def trace_of_upload(spans: Iterable[Span], upload_id: str) -> str | None:
    """The trace id of the spans that name this upload (`ingest.upload_id`)."""
    for span in sorted(spans, key=lambda s: s.start_ns):
        if span.attributes.get("ingest.upload_id") == upload_id:
            return span.trace_id
    return None


def build_tree(spans: Iterable[Span], trace_id: str) -> list[Span]:
    """The trace's roots (spans with no parent, or a parent not collected), children set."""
    members = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in members}
    roots: list[Span] = []
    for span in members:
        span.children = []
    for span in sorted(members, key=lambda s: s.start_ns):
        parent = by_id.get(span.parent_span_id or "")
        (parent.children if parent is not None else roots).append(span)
    return roots


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms" if seconds < 1 else f"{seconds:8.2f} s "


def format_tree(spans: list[Span], trace_id: str, *, depth: int | None = None) -> str:
    roots = build_tree(spans, trace_id)
    if not roots:
        return f"no spans of trace {trace_id}"
    everything = {(s.trace_id, s.span_id): s for s in spans}
    members = [s for s in spans if s.trace_id == trace_id]
    start = min(s.start_ns for s in members)
    end = max(s.end_ns for s in members)
    services = sorted({s.service for s in members})
    lines = [
        f"trace {trace_id}: {len(members)} spans, {(end - start) / 1e9:.2f} s, "
        f"services {', '.join(services)}",
        f"{'span':<58} {'service':<10} {'start':>9} {'duration':>11}",
    ]

    def walk(span: Span, prefix: str, last: bool, level: int, root: bool) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        label = prefix + branch + span.name
        if span.status == "error":
            label += "  [error]"
        if root and span.parent_span_id:
            label += "  (parent not collected)"
        offset = (span.start_ns - start) / 1e9
        lines.append(f"{label:<58} {span.service:<10} {offset:+8.3f}s {_duration(span.seconds)}")
        inner = prefix + ("" if root else ("   " if last else "│  "))
        for link in span.links:
            if link["trace_id"] == span.trace_id and link["span_id"] == span.parent_span_id:
                continue  # the parent, linked as the messaging conventions ask
            linked = everything.get((link["trace_id"], link["span_id"]))
            where = "" if link["trace_id"] == trace_id else f", trace {link['trace_id'][:8]}…"
            what = f"{linked.service} {linked.name}" if linked else "a span not collected"
            lines.append(f"{inner}↳ linked from {what} ({link['span_id'][:8]}…{where})")
        if depth is not None and level >= depth:
            if span.children:
                lines.append(f"{inner}… {count(span) - 1} spans below")
            return
        for i, child in enumerate(span.children):
            walk(child, inner, i == len(span.children) - 1, level + 1, False)

    for root in roots:
        walk(root, "", True, 1, True)
    return "\n".join(lines)


def tree_json(spans: list[Span], trace_id: str, *, depth: int | None = None) -> dict[str, Any]:
    """`ingest trace --json`: the trace and its span tree (`roots`, each with `children`).

    A span cut off by --depth has `"children": []` and `"hidden_below"`: the spans under it.
    """
    roots = build_tree(spans, trace_id)
    members = [s for s in spans if s.trace_id == trace_id]
    start = min((s.start_ns for s in members), default=0)
    end = max((s.end_ns for s in members), default=0)

    def node(span: Span, level: int) -> dict[str, Any]:
        cut = depth is not None and level >= depth
        return {
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "service": span.service,
            "kind": span.kind,
            "status": span.status,
            "start_ns": span.start_ns,
            "end_ns": span.end_ns,
            "offset_s": (span.start_ns - start) / 1e9,
            "duration_s": span.seconds,
            "attributes": span.attributes,
            "links": span.links,
            "children": [] if cut else [node(child, level + 1) for child in span.children],
            **({"hidden_below": count(span) - 1} if cut and span.children else {}),
        }

    return {
        "trace_id": trace_id,
        "span_count": len(members),
        "duration_s": (end - start) / 1e9,
        "services": sorted({s.service for s in members}),
        "roots": [node(root, 1) for root in roots],
    }


def count(span: Span) -> int:
    return 1 + sum(count(child) for child in span.children)


def summarise(spans: list[Span], trace_id: str) -> dict[str, int]:
    """Spans per service in one trace."""
    per_service: dict[str, int] = defaultdict(int)
    for span in spans:
        if span.trace_id == trace_id:
            per_service[span.service] += 1
    return dict(sorted(per_service.items()))


async def find_trace_id(database_url: str, upload: str, spans: Iterable[Span]) -> str | None:
    """The upload's trace id: a trace id given as such, the uploads row, or the spans."""
    if len(upload) == 32 and all(c in "0123456789abcdef" for c in upload.lower()):
        return upload.lower()
    try:
        upload_id = uuid.UUID(upload)
    except ValueError:
        return None
    try:
        connection = await asyncpg.connect(database_url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        connection = None  # no database here: the spans name their upload too
    if connection is not None:
        try:
            trace_id = await connection.fetchval(
                "SELECT trace_id FROM uploads WHERE id = $1", upload_id
            )
        except asyncpg.PostgresError:
            trace_id = None
        finally:
            await connection.close()
        if trace_id:
            return str(trace_id)
    return trace_of_upload(spans, str(upload_id))
