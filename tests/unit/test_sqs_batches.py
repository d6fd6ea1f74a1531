"""How `Aws.send_bodies` cuts bodies into SendMessageBatch calls."""

from __future__ import annotations

from ingest_common.aws import SQS_BATCH, SQS_BATCH_BODY_BYTES, sqs_batches


def test_ten_small_bodies_to_a_batch_in_order() -> None:
    bodies = [f"m{i}" for i in range(25)]
    batches = sqs_batches(bodies)
    assert [len(b) for b in batches] == [SQS_BATCH, SQS_BATCH, 5]
    assert [body for batch in batches for body in batch] == bodies


def test_large_bodies_split_a_batch_by_bytes() -> None:
    third = "x" * (SQS_BATCH_BODY_BYTES // 3)
    batches = sqs_batches([third] * 7)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert all(sum(len(body) for body in batch) <= SQS_BATCH_BODY_BYTES for batch in batches)


def test_bytes_are_counted_encoded() -> None:
    wide = "é" * (SQS_BATCH_BODY_BYTES // 4)  # two bytes each: half the limit per body
    assert [len(b) for b in sqs_batches([wide, wide, wide])] == [2, 1]


def test_a_body_over_the_limit_goes_alone_and_nothing_is_empty() -> None:
    huge = "x" * (SQS_BATCH_BODY_BYTES + 1)
    assert sqs_batches(["a", huge, "b"]) == [["a"], [huge], ["b"]]
    assert sqs_batches([]) == []
