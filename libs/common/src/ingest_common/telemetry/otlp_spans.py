"""Spans to OTLP/protobuf bytes, written straight to the wire format, and the exporter that
sends them.

The SDK's OTLP exporter builds a protobuf object per span, attribute and value, then
serialises the lot: about twice the CPU of writing the same bytes directly, spent in the
export thread of every service's main process, where it holds the GIL the event loop needs
(README, "The whole pipeline, end to end"). `encode_spans` writes what the SDK's
`encode_spans(spans).SerializePartialToString()` writes, byte for byte (checked on every kind
of span, attribute and value by tests/unit/test_otlp_spans.py); `SpanExporter` is the SDK's
OTLP/HTTP exporter, its settings, transport, retries and size limit included, with this
encoding.

The messages written (opentelemetry-proto, trace/v1 and common/v1), fields in number order
and default values left out, as protobuf does:
ExportTraceServiceRequest{1 ResourceSpans{1 Resource{1 KeyValue}, 2 ScopeSpans{1 scope,
2 Span, 3 schema_url}, 3 schema_url}}. A field's tag byte is its number × 8 + its wire type
(0 varint, 1 fixed64, 2 length-delimited, 5 fixed32): b"\x4a" is field 9, length-delimited
(Span.attributes); b"\x85\x01" is field 16, fixed32 (Span.flags), as a two-byte varint.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Link, SpanContext, Status

__all__ = ["SpanExporter", "encode_spans"]

_logger = logging.getLogger(__name__)

_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_INT64 = range(-(2**63), 2**63)
# Span.flags and Link.flags: the W3C flags' bits are not written by the SDK, only whether the
# parent (or linked) context is known to be remote, and if so, that it is.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ExportTraceServiceRequest of ``spans``, grouped by resource, then scope."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        scopes = grouped.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(_span(span))
    out = []
    for resource, scopes in grouped.items():
        body = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
        for scope, encoded in scopes.items():
            scope_spans = [_field(b"\x0a", _scope(scope)), *encoded]
            if scope is not None and scope.schema_url:
                scope_spans.append(_string(b"\x1a", scope.schema_url))
            body.append(_field(b"\x12", b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_string(b"\x1a", resource.schema_url))
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


class SpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter (OTEL_EXPORTER_OTLP_* settings, transport,
    retries, request size limit), encoding with `encode_spans`. Its `export` is the SDK's
    (opentelemetry-exporter-otlp-proto-http 1.45) but for the encoding."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_spans(spans)
            except Exception as error:  # the SDK's exporter reports and drops the batch too
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                    "%d bytes.",
                    len(data),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(data)} bytes exceeds "
                    f"max_request_size {self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {HTTP_RESPONSE_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # a ReadableSpan always has one; the SDK's type says Optional
    parent = span.parent
    parts = [_ids(context)]
    if context.trace_state:
        parts.append(_string(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_string(b"\x2a", span.name))
    # SpanKind: the SDK's enum counts from INTERNAL = 0, OTLP's from UNSPECIFIED = 0.
    parts += (b"\x30", _varint(span.kind.value + 1))
    if span.start_time:
        parts += (b"\x39", _fixed64(span.start_time))
    if span.end_time:
        parts += (b"\x41", _fixed64(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    parts += [_field(b"\x5a", _event(event)) for event in span.events]
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    parts += [_field(b"\x6a", _link(link)) for link in span.links]
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    parts += (_field(b"\x7a", _status(span.status)), b"\x85\x01", _flags(parent))
    return _field(b"\x12", b"".join(parts))


def _ids(context: SpanContext) -> bytes:
    """trace_id (1) and span_id (2), as Span and Link both number them."""
    return b"\x0a\x10%b\x12\x08%b" % (
        context.trace_id.to_bytes(16, "big"),
        context.span_id.to_bytes(8, "big"),
    )


def _event(event: Event) -> bytes:
    fields = [b"\x09", _fixed64(event.timestamp)] if event.timestamp else []
    if event.name:
        fields.append(_string(b"\x12", event.name))
    fields.append(_attributes(b"\x1a", event.attributes))
    if event.dropped_attributes:
        fields += (b"\x20", _varint(event.dropped_attributes))
    return b"".join(fields)


def _link(link: Link) -> bytes:
    # The SDK writes no trace_state (3) for a link.
    fields = [_ids(link.context), _attributes(b"\x22", link.attributes)]
    if link.dropped_attributes:
        fields += (b"\x28", _varint(link.dropped_attributes))
    fields += (b"\x35", _flags(link.context))
    return b"".join(fields)


def _status(status: Status) -> bytes:
    fields = [_string(b"\x12", status.description)] if status.description else []
    if status.status_code.value:
        fields += (b"\x18", _varint(status.status_code.value))
    return b"".join(fields)


def _flags(context: SpanContext | None) -> bytes:
    if context is not None and context.is_remote:
        return _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)
    return _fixed32(_HAS_IS_REMOTE)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    fields = [_string(b"\x0a", scope.name)] if scope.name else []
    if scope.version:
        fields.append(_string(b"\x12", scope.version))
    fields.append(_attributes(b"\x1a", scope.attributes))
    return b"".join(fields)


# A key's encoding (KeyValue.key) is the same in every span: most keys repeat in every batch.
_keys: dict[str, bytes] = {}
_KEYS_KEPT = 4096  # a bound, should a caller make keys from data


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated KeyValue under ``tag``; a value that cannot be encoded is left out and
    logged, as the SDK's encoder does."""
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        try:
            out.append(_key_value(tag, key, value))
        except Exception as error:
            _logger.exception("Failed to encode key %s: %s", key, error)
    return b"".join(out)


# A key/value's whole encoding, for the scalar values that repeat from span to span (a queue, an
# operation, a width, a flag): half of a span's encoding is its attributes. Emptied when full,
# so values that stop repeating make room for those that do.
_pairs: dict[tuple[bytes, str, type, Any], bytes] = {}
_PAIRS_KEPT = 4096
# Not floats: -0.0 == 0.0, encoded apart; and repeated floats are rare (durations, ratios).
_SCALARS = frozenset({str, bool, int})


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    kind = type(value)
    if kind not in _SCALARS:
        return _encode_key_value(tag, key, value)
    # The type is part of the key: True == 1, but they are encoded differently.
    cached = (tag, key, kind, value)
    encoded = _pairs.get(cached)
    if encoded is None:
        if len(_pairs) >= _PAIRS_KEPT:
            _pairs.clear()
        encoded = _pairs[cached] = _encode_key_value(tag, key, value)
    return encoded


def _encode_key_value(tag: bytes, key: str, value: Any) -> bytes:
    return _field(tag, _key(key) + _field(b"\x12", _value(value)))


def _key(key: str) -> bytes:
    encoded = _keys.get(key)
    if encoded is None:
        encoded = _string(b"\x0a", key) if key else b""
        if len(_keys) < _KEYS_KEPT:
            _keys[key] = encoded
    return encoded


def _value(value: Any) -> bytes:
    """An AnyValue (a oneof: its one field is written even when it holds a default)."""
    if isinstance(value, str):
        return _string(b"\x0a", value)
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join([_key_value(b"\x0a", str(k), v) for k, v in value.items()]))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _string(tag: bytes, text: str) -> bytes:
    return _field(tag, text.encode())


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 128 else _varint(size)) + payload


_SMALL = [bytes((n,)) for n in range(128)]


def _varint(number: int) -> bytes:
    if number < 128:
        return _SMALL[number]
    out = bytearray()
    while number >= 128:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)
