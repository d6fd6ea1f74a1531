"""The backfill's settings: the processor's, plus the scan's page size."""

from __future__ import annotations

from pydantic import Field

from ingest_processor.settings import ProcessorSettings


class BackfillSettings(ProcessorSettings):
    """The processor's settings (what to render, how, S3/DB caps) plus the scan's page size."""

    service_name: str = "ingest-backfill"
    backfill_batch_size: int = Field(
        500, ge=1, le=10_000, description="images read per keyset page by `ingest backfill`"
    )
