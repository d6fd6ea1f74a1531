"""Settings shared by every service; each service subclasses `IngestSettings` once.

Every endpoint, bucket, queue, size, limit and concurrency is a field here or in a
service's subclass, read from the environment with the `INGEST_` prefix. A few standard
variables are honoured as well (`DATABASE_URL`, `AWS_ENDPOINT_URL`, `AWS_REGION`), so the
same container runs against RDS/AWS or the local PostgreSQL/moto without wrappers.
"""

from __future__ import annotations

import sys
from typing import Self, TypeVar

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_VISIBILITY = 12 * 60 * 60  # SQS's ceiling for a visibility timeout, seconds


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
    render_slow_queue: str = Field(
        "ingest-render-slow", description="renders too slow for the render queue → slow lane"
    )
    preview_queue: str = Field("ingest-preview", description="product ready → previewer")
    index_queue: str = Field("ingest-index", description="product changed → indexer")
    events_topic: str = Field(
        "ingest-events", description="SNS topic of the domain events (Slack, email, SQS)"
    )
    event_bus: str = Field("ingest-events", description="EventBridge bus of the domain events")
    alarms_topic: str = Field(
        "ingest-alarms", description="SNS topic the CloudWatch alarms notify (a person)"
    )
    # Shared, not the API's alone: `ingest bootstrap` writes it into the uploads bucket's CORS.
    api_cors_origins: tuple[str, ...] = Field(
        ("*",),
        description="browser origins that may POST upload forms to the uploads bucket (a JSON"
        " list), the bucket's CORS rule",
    )

    # --- database ------------------------------------------------------------------------
    db_pool_min: int = Field(1, ge=0, description="connections kept open per process")
    db_pool_max: int = Field(10, ge=1, description="most connections per process")
    db_command_timeout: float = Field(30.0, gt=0, description="seconds per SQL statement")
    db_connect_timeout: float = Field(
        10.0, gt=0, description="seconds to open a PostgreSQL connection"
    )

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

    garbage_delay: float = Field(
        3600.0,
        ge=0,
        description="seconds an object nothing refers to any more is kept before it is deleted"
        " (pages and caches may still point at it)",
    )

    # --- riding out outages (see ingest_common.runtime.dependencies) ----------------------
    dependency_check_interval: float = Field(
        10.0, gt=0, description="seconds between checks that PostgreSQL and AWS answer"
    )
    outage_probe_interval: float = Field(
        2.0, gt=0, description="seconds between checks while one of them does not"
    )
    probe_timeout: float = Field(
        5.0, gt=0, description="seconds a check may take before its dependency counts as down"
    )
    outage_requeue_delay: int = Field(
        5, ge=0, le=900, description="seconds a message handed back during an outage stays hidden"
    )

    # --- health ---------------------------------------------------------------------------
    health_host: str = Field("0.0.0.0", description="address of /healthz and /readyz")
    health_port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    health_fd: int | None = Field(
        None,
        ge=0,
        description="a listening socket inherited from the process that started this one,"
        " served instead of health_host:health_port (the local stack passes one: a port it"
        " picked and closed could be taken before the service binds it)",
    )

    # --- telemetry ------------------------------------------------------------------------
    log_format: str = Field(
        "console", pattern="^(json|console)$", description="json: one event per line"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    trace_client_spans: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="share of uploads whose traces keep a span per S3, SQS, SNS and SQL call"
        " (picked by trace ID, the same in every service; 1: all); messaging, render and"
        " handler spans are always kept",
    )

    # --- settings that only work together -------------------------------------------------
    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if problems := self.conflicts():
            raise ValueError("\n".join(problems))
        return self

    def conflicts(self) -> list[str]:
        """Combinations that cannot work, in words naming the variables; subclasses add theirs."""
        problems = []
        if self.heartbeat_interval * 2 > self.visibility_timeout:
            problems.append(
                f"{self.env('heartbeat_interval')} ({self.heartbeat_interval:g} s) must be at most"
                f" half of {self.env('visibility_timeout')} ({self.visibility_timeout} s), so a"
                " message in work is extended well before it would reappear"
            )
        if self.drain_timeout >= self.visibility_timeout:
            problems.append(
                f"{self.env('drain_timeout')} ({self.drain_timeout:g} s) must be shorter than"
                f" {self.env('visibility_timeout')} ({self.visibility_timeout} s)"
            )
        if self.retry_base_delay > self.retry_max_delay:
            problems.append(
                f"{self.env('retry_base_delay')} ({self.retry_base_delay:g} s) must not exceed"
                f" {self.env('retry_max_delay')} ({self.retry_max_delay:g} s)"
            )
        if self.retry_max_delay > MAX_VISIBILITY:
            problems.append(
                f"{self.env('retry_max_delay')} ({self.retry_max_delay:g} s) is longer than SQS"
                f" can hide a message ({MAX_VISIBILITY} s)"
            )
        if self.db_pool_min > self.db_pool_max:
            problems.append(
                f"{self.env('db_pool_min')} ({self.db_pool_min}) must not exceed"
                f" {self.env('db_pool_max')} ({self.db_pool_max})"
            )
        if self.probe_timeout >= self.dependency_check_interval:
            problems.append(
                f"{self.env('probe_timeout')} ({self.probe_timeout:g} s) must be shorter than"
                f" {self.env('dependency_check_interval')} ({self.dependency_check_interval:g} s)"
            )
        return problems

    @classmethod
    def env(cls, field: str) -> str:
        """The variable a person sets for ``field`` (the first one looked up)."""
        return cls.environment_names(field)[0]


SettingsT = TypeVar("SettingsT", bound=IngestSettings)


def load_settings(settings_class: type[SettingsT]) -> SettingsT:
    """The settings from the environment; settings that cannot work end the process at once
    with exit code 2 and one line per problem, naming the variables, never a traceback."""
    try:
        return settings_class()
    except ValidationError as exc:
        service = settings_class.model_fields["service_name"].default
        print(f"{service}: the settings cannot work:", file=sys.stderr)
        for line in settings_problems(settings_class, exc):
            print(f"  - {line}", file=sys.stderr)
        raise SystemExit(2) from None


def settings_problems(settings_class: type[IngestSettings], exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"] and isinstance(error["loc"][0], str):
            field = error["loc"][0]
            name = settings_class.env(field) if field in settings_class.model_fields else field
            lines.append(f"{name}={error.get('input')!r}: {message}")
        else:
            lines.extend(message.splitlines())
    return lines
