"""Settings shared by every service; each service subclasses `IngestSettings` once.

Every endpoint, bucket, queue, size, limit and concurrency is a field here or in a
service's subclass, read from the environment with the `INGEST_` prefix. A few standard
variables are honoured as well (`DATABASE_URL`, `AWS_ENDPOINT_URL`, `AWS_REGION`), so the
same container runs against RDS/AWS or the local PostgreSQL/moto without wrappers.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INGEST_", extra="ignore", frozen=True, populate_by_name=True
    )

    service_name: str = Field("ingest", description="service.name in logs, traces and metrics")

    @classmethod
    def environment_names(cls, field: str) -> list[str]:
        """The environment variables that set ``field``, in the order they are looked up."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return [choice for choice in alias.choices if isinstance(choice, str)]
        if isinstance(alias, str):
            return [alias]
        return [f"{cls.model_config.get('env_prefix', '')}{field}".upper()]

    # --- where things are -------------------------------------------------------------
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/test",
        validation_alias=AliasChoices("INGEST_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL DSN",
    )
    aws_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("INGEST_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3/SQS endpoint; unset means AWS itself",
    )
    aws_region: str = Field(
        "us-east-1",
        description="AWS region of the buckets and queues",
        validation_alias=AliasChoices("INGEST_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    uploads_bucket: str = Field("ingest-uploads", description="ZIP uploads and originals")
    previews_bucket: str = Field("ingest-previews", description="renditions and mosaics")
    batch_queue: str = Field("ingest-batch", description="S3 upload events → batcher")
    render_queue: str = Field("ingest-render", description="one message per image → processor")
    preview_queue: str = Field("ingest-preview", description="product ready → previewer")
    index_queue: str = Field("ingest-index", description="product changed → indexer")

    # --- database ------------------------------------------------------------------------
    db_pool_min: int = Field(1, ge=0, description="connections kept open per process")
    db_pool_max: int = Field(10, ge=1, description="most connections per process")
    db_command_timeout: float = Field(30.0, gt=0, description="seconds per SQL statement")

    # --- the consumer runtime (each service reads its own queue) --------------------------
    concurrency: int = Field(10, ge=1, description="messages handled at once per process")
    receive_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long-poll wait")
    receive_batch_size: int = Field(10, ge=1, le=10, description="messages per receive (max 10)")
    visibility_timeout: int = Field(
        120, ge=10, description="seconds a received message stays hidden; extended by heartbeat"
    )
    heartbeat_interval: float = Field(
        30.0, gt=0, description="seconds between visibility extensions of in-flight messages"
    )
    handler_timeout: float = Field(600.0, gt=0, description="seconds one message may take")
    retry_base_delay: float = Field(2.0, ge=0, description="first retry delay, doubled per try")
    retry_max_delay: float = Field(300.0, ge=0, description="longest retry delay, seconds")
    drain_timeout: float = Field(
        60.0, gt=0, description="on SIGTERM, seconds to finish in-flight work before cancelling"
    )
    s3_concurrency: int = Field(16, ge=1, description="S3 requests at once per process")

    # --- health ---------------------------------------------------------------------------
    health_host: str = Field("0.0.0.0", description="address of /healthz and /readyz")
    health_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")

    # --- telemetry ------------------------------------------------------------------------
    log_format: str = Field(
        "console", pattern="^(json|console)$", description="json: one event per line"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
