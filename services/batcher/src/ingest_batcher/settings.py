"""The batcher's settings: the shared ones plus the limits on untrusted archives."""

from __future__ import annotations

from ingest_common.settings import IngestSettings
from pydantic import Field

from ingest_batcher.archive import ArchiveLimits


class BatcherSettings(IngestSettings):
    service_name: str = "batcher"
    health_port: int = 8081
    concurrency: int = Field(4, ge=1, description="uploads handled at once per process")
    visibility_timeout: int = 300
    inline_svg_bytes: int = Field(
        32 * 1024,
        ge=0,
        description="SVGs up to this size travel in their render message, so the processor"
        " reads no original from S3 (0: never)",
    )

    # The archive limits default to ArchiveLimits' own defaults: they live in one place.
    max_archive_bytes: int = Field(
        ArchiveLimits.max_archive_bytes,
        ge=1,
        description="largest ZIP accepted",
        json_schema_extra={"limit": ["ZIP size", "bytes", "the set is refused"]},
    )
    max_entries: int = Field(
        ArchiveLimits.max_entries,
        ge=1,
        description="most entries in one ZIP",
        json_schema_extra={
            "limit": [
                "entries in a ZIP (a set lists one fewer: manifest.json is one)",
                "count",
                "the set is refused (entry-count bomb)",
            ]
        },
    )
    max_file_bytes: int = Field(
        ArchiveLimits.max_file_bytes,
        ge=1,
        description="largest SVG, uncompressed",
        json_schema_extra={"limit": ["one file, uncompressed", "bytes", "that file is refused"]},
    )
    max_total_bytes: int = Field(
        ArchiveLimits.max_total_bytes,
        ge=1,
        description="largest ZIP, uncompressed",
        json_schema_extra={
            "limit": ["uncompressed total", "bytes", "the set is refused (size bomb)"]
        },
    )
    max_compression_ratio: float = Field(
        ArchiveLimits.max_compression_ratio,
        gt=1,
        description="per entry, against bombs",
        json_schema_extra={
            "limit": ["compression ratio of a file", "ratio", "that file is refused (ratio bomb)"]
        },
    )
    max_manifest_bytes: int = Field(
        ArchiveLimits.max_manifest_bytes,
        ge=1,
        description="largest manifest.json",
        json_schema_extra={"limit": ["manifest.json", "bytes", "the set is refused"]},
    )
    safety_net_delay: int = Field(
        300, ge=0, le=900, description="seconds before the previewer re-checks a set that stalls"
    )
    # Reconciliation re-announces uploads whose S3 event was lost (ingest_batcher.reconcile).
    reconcile_interval: float = Field(
        900.0, ge=0, description="seconds between reconciliations of the uploads bucket; 0: never"
    )
    reconcile_grace: float = Field(
        300.0, ge=0, description="seconds an upload's own S3 event has before it is re-announced"
    )
    # The sweeper deletes objects nothing refers to any more (ingest_common.garbage).
    sweep_interval: float = Field(
        300.0, ge=0, description="seconds between sweeps of objects nothing refers to; 0: never"
    )

    # The outbox's publisher (ingest_common.outbox) runs in the batcher.
    outbox_poll_interval: float = Field(
        1.0, gt=0, description="seconds between looks at the outbox when no commit wakes it"
    )
    outbox_batch_window: float = Field(
        0.5,
        ge=0,
        le=10,
        description="seconds a woken publisher lets more events commit, to send them together",
    )
    outbox_retention: float = Field(
        7 * 86400.0,
        ge=3600,
        description="seconds a published event stays in the outbox (for replays and audits)",
    )

    def archive_limits(self) -> ArchiveLimits:
        """The limits on untrusted archives these settings describe."""
        return ArchiveLimits(
            max_archive_bytes=self.max_archive_bytes,
            max_entries=self.max_entries,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_compression_ratio=self.max_compression_ratio,
            max_manifest_bytes=self.max_manifest_bytes,
        )
