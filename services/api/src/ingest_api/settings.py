"""The API's settings: the shared ones, where it listens, and what it tells clients."""

from __future__ import annotations

from ingest_common.settings import IngestSettings
from pydantic import Field

MiB = 1024 * 1024


class ApiSettings(IngestSettings):
    service_name: str = "api"
    health_port: int = 8085
    api_host: str = Field("0.0.0.0", description="address the HTTP API listens on")
    api_port: int = Field(8000, ge=0, le=65535, description="port of the HTTP API; 0: any free one")
    # The batcher's INGEST_MAX_ARCHIVE_BYTES: one variable sets both (a test keeps the
    # defaults equal); the API signs it into every upload form, S3 refuses a larger ZIP.
    max_archive_bytes: int = Field(
        200 * MiB, ge=1, description="largest ZIP an upload form lets S3 accept"
    )
    api_upload_expires: int = Field(
        3600,
        ge=60,
        le=7 * 24 * 3600,
        description="seconds an upload form (POST /v1/uploads) stays valid",
    )
    public_base_url: str | None = Field(
        None,
        description="where renditions and mosaics are served (a CDN), e.g."
        " https://cdn.example.com; unset: the previews bucket's S3 URL",
    )
    api_heartbeat_interval: float = Field(
        15.0, gt=0, description="seconds between keep-alive comments on an event stream"
    )
    api_stream_timeout: float = Field(
        3600.0, gt=0, description="seconds an event stream stays open at most (clients reconnect)"
    )

    def public_base(self) -> str:
        """The base URL of objects in the previews bucket, without a trailing slash."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        bucket = self.previews_bucket
        if self.aws_endpoint_url:  # a local endpoint (moto, MinIO): path-style
            return f"{self.aws_endpoint_url.rstrip('/')}/{bucket}"
        if self.aws_region == "us-east-1":
            return f"https://{bucket}.s3.amazonaws.com"
        return f"https://{bucket}.s3.{self.aws_region}.amazonaws.com"

    def public_url(self, key: str) -> str:
        return f"{self.public_base()}/{key}"

    def conflicts(self) -> list[str]:
        problems = super().conflicts()
        if self.api_port and self.api_port == self.health_port:
            problems.append(
                f"{self.env('api_port')} and {self.env('health_port')} are both {self.api_port}:"
                " the API and its health and metrics need a port each"
            )
        return problems
