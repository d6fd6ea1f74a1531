"""The CLI's settings: the shared ones (it talks to the same database, buckets and queues)."""

from __future__ import annotations

from ingest_common.settings import IngestSettings
from pydantic import Field


class CliSettings(IngestSettings):
    service_name: str = "ingest-cli"
    # Someone is waiting: an unreachable endpoint is reported in about 3 s, not retried
    # for 20 (the services keep ingest_common.aws's longer defaults).
    aws_connect_timeout: float = Field(1, description="seconds to connect to the AWS endpoint")
    aws_max_attempts: int = Field(2, description="attempts per AWS call, the first included")
