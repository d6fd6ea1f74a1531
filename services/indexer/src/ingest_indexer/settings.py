"""The indexer's settings."""

from __future__ import annotations

from typing import Literal

from ingest_common.settings import IngestSettings
from pydantic import Field


class IndexerSettings(IngestSettings):
    service_name: str = "indexer"
    health_port: int = 8084
    concurrency: int = Field(10, ge=1)
    search_backend: Literal["postgres"] = Field(
        "postgres", description="where products are indexed (OpenSearch is the next backend)"
    )
