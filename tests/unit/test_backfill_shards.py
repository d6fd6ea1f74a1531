"""Shards split the images evenly and each image to one shard; their stats add up."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from ingest_processor.backfill import BackfillSettings, BackfillStats, SelectionError, Shard
from ingest_processor.backfill.shards import shard_settings
from ingest_processor.backfill.stats import combine


def test_every_image_belongs_to_exactly_one_shard_and_the_shares_are_even() -> None:
    # Image ids are uuid5 (ingest_common.ids): their last bytes are a hash's.
    images = [uuid.uuid5(uuid.NAMESPACE_URL, f"image:{n}") for n in range(8000)]
    for count in (1, 2, 3, 16):
        owners = [[i for i in range(count) if Shard(i, count).owns(image)] for image in images]
        assert all(len(owner) == 1 for owner in owners)
        shares = Counter(owner[0] for owner in owners)
        assert min(shares.values()) > 0.85 * len(images) / count


def test_a_shard_must_exist() -> None:
    with pytest.raises(SelectionError, match="shards must be 1 to"):
        Shard(0, 0)
    with pytest.raises(SelectionError, match="does not exist"):
        Shard(3, 3)


def test_the_render_workers_are_shared_out_to_the_shards() -> None:
    settings = BackfillSettings(render_workers=5)
    shares = [shard_settings(settings, Shard(i, 3)).render_workers for i in range(3)]
    assert shares == [2, 2, 1]
    assert shard_settings(settings, Shard(1, 3)).s3_concurrency == settings.s3_concurrency


def test_combined_stats_add_up_and_keep_one_example_per_reason() -> None:
    first, second = BackfillStats(profile="p"), BackfillStats(profile="p")
    lost, broken = uuid.uuid4(), uuid.uuid4()
    first.done, first.rendered, first.cpu_render, first.pool_starved = 10, 11, 1.5, 2.0
    second.done, second.rendered, second.cpu_render = 5, 5, 0.5
    first.fail(lost, "original missing from S3")
    second.fail(broken, "original missing from S3")
    second.resumed_from, second.shards_resumed, second.earlier_done = broken, 1, 7

    total = combine([first, second], started=100.0, finished=110.0)
    assert (total.shards, total.done, total.rendered, total.failed) == (2, 15, 16, 2)
    assert (total.cpu_render, total.earlier_done, total.shards_resumed) == (2.0, 7, 1)
    assert total.failures == {"original missing from S3": 2}
    assert total.failure_examples == {"original missing from S3": lost}
    assert total.resumed_from is None  # one checkpoint per shard: none stands for the run
    assert total.elapsed == 10.0
    assert total.pool_fed == pytest.approx(1 - 2.0 / 20.0)
