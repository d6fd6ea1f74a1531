"""Logs, traces and metrics: structlog for one-event-per-line logs, OpenTelemetry for
traces (OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set) and metrics (/metrics in
Prometheus text, and OTLP when configured)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from ingest_common.settings import IngestSettings
from ingest_common.telemetry.logging import configure_logging
from ingest_common.telemetry.metrics import configure_metrics
from ingest_common.telemetry.resource import build_resource
from ingest_common.telemetry.tracing import configure_tracing


@dataclass(frozen=True)
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        """Flush what is buffered (spans, a last metrics export) and stop the exporters."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure_telemetry(settings: IngestSettings) -> Telemetry:
    """Everything a service process needs, once, before its event loop starts."""
    service = settings.service_name
    configure_logging(service, fmt=settings.log_format, level=settings.log_level)
    resource = build_resource(service)
    tracer_provider = configure_tracing(
        service, resource=resource, client_spans=settings.trace_client_spans
    )
    meter_provider = configure_metrics(service, resource=resource)
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # A CLIENT span per query (statement text, never the parameters).
    AsyncPGInstrumentor().instrument(tracer_provider=tracer_provider)  # type: ignore[no-untyped-call]
    return Telemetry(tracer_provider, meter_provider)
