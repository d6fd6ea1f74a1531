"""The CLI's settings: the shared ones (it talks to the same database, buckets and queues)."""

from __future__ import annotations

from ingest_common.settings import IngestSettings


class CliSettings(IngestSettings):
    service_name: str = "ingest-cli"
