"""The processor's public module: what another package of the workspace may import from it.

The `ingest` CLI's `backfill` command renders with the processor's own render pool, render
settings and rendition keys, through this module only; the rest of ingest_processor is the
service's own (the import contracts, [tool.importlinter] in the root pyproject.toml, check it).
"""

from ingest_processor.backfill import (
    BackfillSettings,
    BackfillStats,
    Selection,
    SelectionError,
    ShardedBackfill,
    default_shards,
)

__all__ = [
    "BackfillSettings",
    "BackfillStats",
    "Selection",
    "SelectionError",
    "ShardedBackfill",
    "default_shards",
]
