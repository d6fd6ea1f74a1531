"""Backfill: (re)render the renditions of ready images straight from their S3 originals.

What is rendered: ``ready`` images in the selection (``--all``, a family, a product, images
lacking a format or a width) whose ``renditions`` do not yet hold every configured width ×
format made with the current render profile (see ``renditions.render_profile``). Pending
images belong to the processor and failed ones keep their reason; neither is touched.

- ``selection``: which images, as SQL, and which shard of them;
- ``pipeline``: ``Backfill``, one shard's checkpointed pipeline (S3 → render pool → S3 → rows);
- ``shards``: ``ShardedBackfill``, K shard processes, so the client work uses every core too;
- ``stats``: what a run did, per shard and combined.

The progress line and the summary are the CLI's (``ingest_cli.backfill``).
"""

from ingest_processor.backfill.pipeline import Backfill
from ingest_processor.backfill.selection import Selection, SelectionError, Shard
from ingest_processor.backfill.settings import BackfillSettings
from ingest_processor.backfill.shards import ShardedBackfill, default_shards
from ingest_processor.backfill.stats import BackfillStats

__all__ = [
    "Backfill",
    "BackfillSettings",
    "BackfillStats",
    "Selection",
    "SelectionError",
    "Shard",
    "ShardedBackfill",
    "default_shards",
]
