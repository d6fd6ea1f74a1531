"""`ingest trace` reads the demo's JSON lines, OTLP JSON file exports, Jaeger and Tempo JSON:
the same three spans, written by hand in each format, make the same tree."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from ingest_cli.trace import Span, SpanFormatError, format_tree, load_spans, tree_json

TRACE = "0af7651916cd43dd8448eb211c80319c"
OTHER_TRACE = "11111111111111111111111111111111"
ROOT, CHILD, LEAF, LINKED = "a1a1a1a1a1a1a1a1", "b2b2b2b2b2b2b2b2", "c3c3c3c3c3c3c3c3", "d4" * 8
UPLOAD = "8f3a1c2e-0000-4000-8000-000000000001"
T0 = 1_700_000_000_000_000_000  # ns, a multiple of 1000 (Jaeger has microseconds)

# (span id, parent, name, service, kind, start ms, end ms, status, attributes, links)
SPANS: list[tuple[str, str | None, str, str, str, int, int, str, dict[str, Any], list[str]]] = [
    (ROOT, None, "upload", "ingest-cli", "client", 0, 900, "unset", {"ingest.upload_id": UPLOAD}, []),
    (CHILD, ROOT, "process ingest-batch", "batcher", "consumer", 100, 400, "ok", {"ingest.files": 3}, []),
    (LEAF, CHILD, "render", "processor", "internal", 200, 350, "error", {"ingest.cached": True}, [LINKED]),
]  # fmt: skip


def demo_lines() -> str:
    return "".join(
        json.dumps(
            {
                "trace_id": TRACE,
                "span_id": span_id,
                "parent_span_id": parent,
                "name": name,
                "kind": kind,
                "service": service,
                "start_ns": T0 + start * 1_000_000,
                "end_ns": T0 + end * 1_000_000,
                "status": status,
                "attributes": attributes,
                "links": [{"trace_id": OTHER_TRACE, "span_id": link} for link in links],
                "resource": {"service.name": service},
            }
        )
        + "\n"
        for span_id, parent, name, service, kind, start, end, status, attributes, links in SPANS
    )


def otlp_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in OTLP JSON
    return {"stringValue": value}


def otlp_resource_spans(encode: Any, kinds_as_names: bool) -> list[dict[str, Any]]:
    kinds = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
    codes = {"unset": 0, "ok": 1, "error": 2}
    out = []
    for span_id, parent, name, service, kind, start, end, status, attributes, links in SPANS:
        span = {
            "traceId": encode(TRACE),
            "spanId": encode(span_id),
            "parentSpanId": encode(parent) if parent else "",
            "name": name,
            "kind": f"SPAN_KIND_{kind.upper()}" if kinds_as_names else kinds[kind],
            "startTimeUnixNano": str(T0 + start * 1_000_000),
            "endTimeUnixNano": str(T0 + end * 1_000_000),
            "attributes": [{"key": k, "value": otlp_value(v)} for k, v in attributes.items()],
            "links": [{"traceId": encode(OTHER_TRACE), "spanId": encode(link)} for link in links],
            "status": {"code": f"STATUS_CODE_{status.upper()}"}
            if kinds_as_names
            else ({"code": codes[status]} if status != "unset" else {}),
        }
        out.append(
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": service}}]
                },
                "scopeSpans": [{"scope": {"name": "ingest"}, "spans": [span]}],
            }
        )
    return out


def otlp_file_export() -> str:
    """The collector's file exporter: one ExportTraceServiceRequest a line, ids in hex."""
    everything = otlp_resource_spans(lambda hex_id: hex_id, kinds_as_names=False)
    return "".join(json.dumps({"resourceSpans": [rs]}) + "\n" for rs in everything)


def tempo() -> str:
    """Tempo's GET /api/traces/<id>: {"batches": [...]}, ids in base64, enums by name."""
    b64 = lambda hex_id: base64.b64encode(bytes.fromhex(hex_id)).decode()  # noqa: E731
    return json.dumps({"batches": otlp_resource_spans(b64, kinds_as_names=True)}, indent=2)


def jaeger() -> str:
    """Jaeger UI's "Download JSON"."""
    spans, processes = [], {}
    for i, (
        span_id,
        parent,
        name,
        service,
        kind,
        start,
        end,
        status,
        attributes,
        links,
    ) in enumerate(SPANS):
        processes[f"p{i}"] = {"serviceName": service, "tags": []}
        tags = [{"key": k, "type": "string", "value": v} for k, v in attributes.items()]
        tags.append({"key": "span.kind", "type": "string", "value": kind})
        if status != "unset":
            tags.append({"key": "otel.status_code", "type": "string", "value": status.upper()})
        if status == "error":
            tags.append({"key": "error", "type": "bool", "value": True})
        references = [{"refType": "CHILD_OF", "traceID": TRACE, "spanID": parent}] if parent else []
        references += [
            {"refType": "FOLLOWS_FROM", "traceID": OTHER_TRACE, "spanID": link} for link in links
        ]
        spans.append(
            {
                "traceID": TRACE,
                "spanID": span_id,
                "operationName": name,
                "references": references,
                "startTime": (T0 + start * 1_000_000) // 1000,
                "duration": (end - start) * 1000,
                "processID": f"p{i}",
                "tags": tags,
            }
        )
    return json.dumps({"data": [{"traceID": TRACE, "spans": spans, "processes": processes}]})


def essentials(spans: list[Span]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.name,
            s.service,
            s.kind,
            s.start_ns,
            s.end_ns,
            s.status,
            s.attributes,
            s.links,
        )
        for s in spans
    )


FORMATS = {
    "spans.jsonl": demo_lines,
    "otlp.jsonl": otlp_file_export,
    "tempo.json": tempo,
    "jaeger.json": jaeger,
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_gives_the_same_spans_and_tree(name: str, tmp_path: Path) -> None:
    reference = tmp_path / "reference.jsonl"
    reference.write_text(demo_lines())
    path = tmp_path / name
    path.write_text(FORMATS[name]())
    expected, spans = load_spans(reference), load_spans(path)
    assert essentials(spans) == essentials(expected)
    tree = format_tree(spans, TRACE)
    assert tree == format_tree(expected, TRACE)
    assert tree_json(spans, TRACE) == tree_json(expected, TRACE)
    assert "render  [error]" in tree
    assert "linked from a span not collected" in tree


def test_the_json_tree(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text(demo_lines())
    tree = tree_json(load_spans(path), TRACE, depth=1)
    assert (tree["span_count"], tree["services"]) == (3, ["batcher", "ingest-cli", "processor"])
    [root] = tree["roots"]
    assert (root["name"], root["children"], root["hidden_below"]) == ("upload", [], 2)
    assert root["duration_s"] == pytest.approx(0.9)


@pytest.mark.parametrize("text", ['{"hello": 1}', "not json\nat all\n", "[1, 2]"])
def test_anything_else_is_refused_with_a_reason(text: str, tmp_path: Path) -> None:
    path = tmp_path / "spans.json"
    path.write_text(text)
    with pytest.raises(SpanFormatError):
        load_spans(path)
