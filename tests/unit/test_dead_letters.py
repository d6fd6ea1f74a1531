"""A dead letter's attributes: at most 10, the reason bounded, the originals kept exactly."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from ingest_common.dead_letters import (
    MAX_REASON,
    PACKED,
    dead_letter_attributes,
    dead_letter_reason,
    dead_letter_source,
    is_dead_letter,
    original_attributes,
)

# One of each kind SQS has, custom types among them, cycled to make up to 10 attributes.
KINDS: list[dict[str, Any]] = [
    {
        "DataType": "String",
        "StringValue": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
    {"DataType": "Number", "StringValue": "-12.5e3"},
    {"DataType": "Binary", "BinaryValue": bytes(range(256))},
    {"DataType": "String.utf8", "StringValue": 'ünïcödé "quoted" \\ {json} 😀\n'},
    {"DataType": "Number.int", "StringValue": "42"},
    {"DataType": "Binary.gzip", "BinaryValue": b"\x1f\x8b\x00"},
]


def originals(count: int) -> dict[str, Any]:
    return {f"attr-{i}": dict(KINDS[i % len(KINDS)]) for i in range(count)}


def received(attributes: dict[str, Any]) -> dict[str, Any]:
    """As ReceiveMessage returns them: with SQS's reserved (empty) list fields."""
    return {
        name: {**value, "StringListValues": [], "BinaryListValues": []}
        for name, value in attributes.items()
    }


@pytest.mark.parametrize("count", range(11))
def test_round_trip_keeps_every_original_attribute(count: int) -> None:
    original = originals(count)
    dead = dead_letter_attributes(original, "product 7 does not exist", "ingest-render")
    assert len(dead) <= 10
    assert is_dead_letter(dead)
    assert dead_letter_reason(dead) == "product 7 does not exist"
    assert dead_letter_source(dead) == "ingest-render"
    assert original_attributes(dead) == original
    # The same, through SQS: the received shape undoes to what SendMessage takes.
    assert original_attributes(received(dead)) == original


@pytest.mark.parametrize("count", range(11))
def test_the_originals_are_packed_only_when_there_is_no_room(count: int) -> None:
    dead = dead_letter_attributes(originals(count), "why", "ingest-index")
    if count <= 8:
        assert set(dead) == {*originals(count), "ingest-error", "ingest-source-queue"}
    else:
        assert set(dead) == {PACKED, "ingest-error", "ingest-source-queue"}
        assert dead[PACKED]["DataType"] == "String"
        packed = json.loads(dead[PACKED]["StringValue"])
        assert packed["attr-2"]["BinaryValue"] == base64.b64encode(bytes(range(256))).decode()
        assert packed["attr-5"]["DataType"] == "Binary.gzip"


def test_an_original_named_like_ours_is_packed_not_overwritten() -> None:
    original = {
        "ingest-error": {"DataType": "String", "StringValue": "an earlier failure"},
        "ingest-source-queue": {"DataType": "String", "StringValue": "elsewhere"},
    }
    dead = dead_letter_attributes(original, "now", "ingest-batch")
    assert dead_letter_reason(dead) == "now"
    assert original_attributes(dead) == original


def test_a_message_that_is_not_our_dead_letter_comes_back_unchanged() -> None:
    for attributes in (originals(0), originals(10), {PACKED: KINDS[0], **originals(3)}):
        assert original_attributes(attributes) == attributes
        assert original_attributes(received(attributes)) == attributes
        assert dead_letter_reason(attributes) is None


def test_a_packed_value_we_did_not_write_is_kept_as_is() -> None:
    dead = dead_letter_attributes(originals(1), "why", "ingest-render")
    dead[PACKED] = {"DataType": "String", "StringValue": "not json"}
    assert original_attributes(dead) == {**originals(1), PACKED: dead[PACKED]}


def test_a_long_reason_is_truncated() -> None:
    dead = dead_letter_attributes({}, "x" * 5000, "ingest-render")
    reason = dead_letter_reason(dead)
    assert reason is not None
    assert len(reason) == MAX_REASON
    assert reason.endswith("x…")
    exact = "y" * MAX_REASON
    assert dead_letter_reason(dead_letter_attributes({}, exact, "q")) == exact


def test_a_reason_sqs_would_refuse_is_made_sendable() -> None:
    assert dead_letter_reason(dead_letter_attributes({}, "", "q")) == "no reason given"
    reason = dead_letter_reason(dead_letter_attributes({}, "bad \x00 byte\tok", "q"))
    assert reason == "bad \ufffd byte\tok"
