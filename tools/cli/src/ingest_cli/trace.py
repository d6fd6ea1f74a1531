"""`ingest trace UPLOAD_ID`: an upload's spans as a tree, from spans collected locally.

`OtlpReceiver` is a tiny OTLP/HTTP receiver on loopback (POST /v1/traces, protobuf)
that appends every span to a JSON-lines file; `ingest demo` and the end-to-end tests
point the services' OTEL_EXPORTER_OTLP_ENDPOINT at it. It runs in a thread of its own,
so it keeps answering while the caller blocks (stopping the services, which flush their
last spans on the way out). Metrics and logs posted to it are accepted and dropped.
"""

from __future__ import annotations

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

    def env(self) -> dict[str, str]:
        """The variables that point an OpenTelemetry SDK at this receiver."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }

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


def load_spans(path: Path) -> list[Span]:
    spans: list[Span] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                spans.append(Span.from_record(json.loads(line)))
    return spans


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
