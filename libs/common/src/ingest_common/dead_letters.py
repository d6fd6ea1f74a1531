"""The message attributes of a dead letter: the original's, plus why it failed and where.

The consumer runtime sends an invalid message or a permanent failure to its queue's DLQ
with two attributes of ours, `ingest-error` (the reason) and `ingest-source-queue`. SQS
allows 10 message attributes in all, so when the original's leave no room for ours, every
original is packed into one String attribute, `ingest-attributes` (JSON), and nothing is
lost. `original_attributes` undoes either form, so a redrive sends the message back with
exactly the attributes it was first sent with (its trace context among them).

Attributes are in SQS's MessageAttributes shape: {"DataType": ..., "StringValue": ...} or
{"DataType": ..., "BinaryValue": bytes}. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from ingest_common.telemetry.tracing import SQS_MAX_ATTRIBUTES

ERROR = "ingest-error"
SOURCE_QUEUE = "ingest-source-queue"
PACKED = "ingest-attributes"
_OURS = (ERROR, SOURCE_QUEUE, PACKED)

# Far inside SQS's size limit (the whole message, attributes included), and still a
# readable reason; `ingest dlq list` shows it on one line.
MAX_REASON = 1000

# SQS refuses characters outside XML's set (e.g. NUL from a quoted binary body): a reason
# must never make its dead letter unsendable.
_NOT_XML = re.compile(r"[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def dead_letter_attributes(
    original: Mapping[str, Any], reason: str, source_queue: str
) -> dict[str, Any]:
    """The attributes to send a dead letter with: always at most SQS's 10."""
    attributes = {name: _sendable(value) for name, value in original.items()}
    # Pack also when an original uses one of our names, so that undoing is never ambiguous.
    if len(attributes) + 2 > SQS_MAX_ATTRIBUTES or any(name in _OURS for name in attributes):
        attributes = {PACKED: _string(_pack(attributes))}
    attributes[ERROR] = _string(bounded_reason(reason))
    attributes[SOURCE_QUEUE] = _string(source_queue)
    return attributes


def original_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes the message had before it was dead-lettered, ready to send again.

    A message that is not a dead letter of ours (e.g. one SQS's redrive policy moved)
    comes back unchanged, but for the empty StringListValues/BinaryListValues that
    ReceiveMessage adds (SQS reserves them; sending them back is not needed).
    """
    sendable = {name: _sendable(value) for name, value in attributes.items()}
    if not is_dead_letter(sendable):
        return sendable
    if PACKED in sendable:
        unpacked = _unpack(sendable[PACKED])
        if unpacked is not None:
            return unpacked
    # Not packed (or a packed value we did not write): the originals are the rest.
    return {name: value for name, value in sendable.items() if name not in (ERROR, SOURCE_QUEUE)}


def is_dead_letter(attributes: Mapping[str, Any]) -> bool:
    """Whether the runtime dead-lettered this message (it always sets both attributes)."""
    return ERROR in attributes and SOURCE_QUEUE in attributes


def dead_letter_reason(attributes: Mapping[str, Any]) -> str | None:
    return _string_value(attributes.get(ERROR))


def dead_letter_source(attributes: Mapping[str, Any]) -> str | None:
    return _string_value(attributes.get(SOURCE_QUEUE))


def bounded_reason(reason: str) -> str:
    """The reason as SQS accepts it: non-empty, XML characters only, ≤ MAX_REASON."""
    text = _NOT_XML.sub("\ufffd", reason) or "no reason given"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def _sendable(value: Mapping[str, Any]) -> dict[str, Any]:
    """DataType and its one value, as SendMessage takes them."""
    result: dict[str, Any] = {"DataType": value["DataType"]}
    if "StringValue" in value:
        result["StringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        result["BinaryValue"] = _bytes(value["BinaryValue"])
    return result


def _bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    # botocore takes str for a blob too, and sends it UTF-8 encoded.
    return value.encode() if isinstance(value, str) else bytes(value)


def _string(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value}


def _string_value(attribute: Mapping[str, Any] | None) -> str | None:
    if attribute is None or "StringValue" not in attribute:
        return None
    return str(attribute["StringValue"])


def _pack(attributes: Mapping[str, dict[str, Any]]) -> str:
    packed: dict[str, dict[str, str]] = {}
    for name, value in attributes.items():
        entry = {"DataType": str(value["DataType"])}
        if "StringValue" in value:
            entry["StringValue"] = str(value["StringValue"])
        if "BinaryValue" in value:
            entry["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        packed[name] = entry
    # ensure_ascii=False: the originals were valid SQS text, so the JSON is too, and smaller.
    return json.dumps(packed, ensure_ascii=False, separators=(",", ":"))


def _unpack(attribute: Mapping[str, Any]) -> dict[str, Any] | None:
    """The attributes `_pack` packed, or None if this is not a value it wrote."""
    try:
        packed = json.loads(attribute.get("StringValue", ""))
        if not isinstance(packed, dict):
            return None
        attributes: dict[str, Any] = {}
        for name, entry in packed.items():
            value: dict[str, Any] = {"DataType": entry["DataType"]}
            if "StringValue" in entry:
                value["StringValue"] = entry["StringValue"]
            if "BinaryValue" in entry:
                value["BinaryValue"] = base64.b64decode(entry["BinaryValue"], validate=True)
            attributes[name] = value
    except (ValueError, TypeError, KeyError):  # binascii.Error is a ValueError
        return None
    return attributes
