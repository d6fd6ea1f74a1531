"""Logs and traces: structlog for one-event-per-line logs, OpenTelemetry for traces."""
