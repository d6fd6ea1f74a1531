"""OpenTelemetry metrics: what an SRE watches, readable at /metrics and sent over OTLP.

| metric (Prometheus name)                        | kind      | attributes            |
|-------------------------------------------------|-----------|-----------------------|
| `ingest.messages` (`ingest_messages_total`)     | counter   | queue, outcome        |
| `ingest.message.duration` (`…_seconds`)         | histogram | queue, outcome        |
| `ingest.queue.oldest_message_age` (`…_seconds`) | gauge     | queue                 |
| `ingest.render.duration` (`…_seconds`)          | histogram | lane                  |
| `ingest.render.busy` (`…_seconds_total`)        | counter   | lane                  |
| `ingest.render.workers` (`ingest_render_workers`) | gauge   | lane                  |
| `ingest.upload.images` (`ingest_upload_images`) | histogram | (none)                |
| `ingest.events.published` (`…_total`)           | counter   | type                  |
| `ingest.outbox.oldest_unpublished_age` (`…_seconds`) | gauge | (none)         |

outcome is ok, retry, failed (a permanent failure, sent to the DLQ), invalid (a poison
message, sent to the DLQ) or outage (handed back unprocessed while a dependency is down).
The outbox's age is reported by the batcher process that publishes; it grows while events
wait (an SNS outage, a publisher that cannot keep up).

A processor's render lanes (render, slow) report the seconds their workers have held a
render (from its start to its result, by the pool's clock) and how many workers they have:
rate(busy) / workers is how busy the lane's workers are, the figure to scale processors on
(low while the queue's oldest age grows: something around the renders starves them; high:
add processors).

The age of the oldest message is what this consumer sees, not the queue's (SQS's API has
no such attribute; CloudWatch's ApproximateAgeOfOldestMessage is the queue-wide one): the
largest of, for messages in flight, now − SentTimestamp, and, for messages received in the
last minute, their age when received. A growing value means the consumers fall behind; 0
means nothing was received for a minute.

Instruments are module-level and bound to whatever provider `configure_metrics` installs,
so recording costs an in-memory update; export happens in the background (OTLP every
OTEL_METRIC_EXPORT_INTERVAL ms) or when /metrics is scraped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from ingest_common.telemetry.resource import build_resource
from ingest_common.telemetry.tracing import otlp_enabled

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
IMAGE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
AGE_WINDOW = 60.0  # seconds a received message's age still counts towards the gauge

_meter = metrics.get_meter("ingest")

messages = _meter.create_counter(
    "ingest.messages", unit="{message}", description="messages handled, by queue and outcome"
)
message_duration = _meter.create_histogram(
    "ingest.message.duration",
    unit="s",
    description="time to handle one message, from receipt to outcome",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)
render_duration = _meter.create_histogram(
    "ingest.render.duration",
    unit="s",
    description="time a render worker took to render one SVG into all its renditions "
    "(not storing them); each rendition's own time is a span of the upload's trace",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)
upload_images = _meter.create_histogram(
    "ingest.upload.images",
    unit="{image}",
    description="images accepted per upload",
    explicit_bucket_boundaries_advisory=IMAGE_BUCKETS,
)

AgeSource = Callable[[], float]
_age_sources: dict[str, AgeSource] = {}
_age_lock = threading.Lock()


def _observe_ages(_: CallbackOptions) -> Iterable[Observation]:
    with _age_lock:
        sources = list(_age_sources.items())
    return [Observation(source(), {"queue": queue}) for queue, source in sources]


oldest_message_age = _meter.create_observable_gauge(
    "ingest.queue.oldest_message_age",
    callbacks=[_observe_ages],
    unit="s",
    description="age of the oldest message this consumer has in flight or received in the "
    "last minute (now - SentTimestamp)",
)


def watch_queue_age(queue: str, source: AgeSource) -> None:
    with _age_lock:
        _age_sources[queue] = source


def unwatch_queue_age(queue: str) -> None:
    with _age_lock:
        _age_sources.pop(queue, None)


class OldestAge:
    """The consumer's view of its queue's backlog: see the module's docstring."""

    def __init__(self, window: float = AGE_WINDOW) -> None:
        self.window = window
        # (monotonic at receipt, age then), oldest first. Pruned where entries are added, on
        # the event loop, so it stays bounded even if nothing ever reads the gauge; value()
        # (possibly on an exporter thread) only reads a snapshot.
        self._received: deque[tuple[float, float]] = deque()

    def received(self, sent_at: float, now: float | None = None) -> None:
        if sent_at <= 0:
            return
        arrived = time.monotonic()
        while self._received and self._received[0][0] < arrived - self.window:
            self._received.popleft()
        self._received.append((arrived, max(0.0, (now or time.time()) - sent_at)))

    def value(self, in_flight_sent_at: Iterable[float]) -> float:
        horizon = time.monotonic() - self.window
        now = time.time()
        ages = [age for t, age in list(self._received) if t >= horizon]
        ages.extend(max(0.0, now - sent) for sent in in_flight_sent_at if sent > 0)
        return round(max(ages, default=0.0), 3)


# Render pools by lane (the processor's render and slow lanes): seconds their workers have held
# a render, and how many workers they have. rate(busy) / workers is the lane's utilisation.
_render_pools: dict[str, tuple[Callable[[], float], int]] = {}
_pools_lock = threading.Lock()


def _observe_render_busy(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(busy(), {"lane": lane}) for lane, (busy, _) in _pools()]


def _observe_render_workers(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(workers, {"lane": lane}) for lane, (_, workers) in _pools()]


def _pools() -> list[tuple[str, tuple[Callable[[], float], int]]]:
    with _pools_lock:
        return list(_render_pools.items())


render_busy = _meter.create_observable_counter(
    "ingest.render.busy",
    callbacks=[_observe_render_busy],
    unit="s",
    description="seconds render workers held a render, by lane; its rate over "
    "ingest.render.workers is how busy they are",
)
render_workers = _meter.create_observable_gauge(
    "ingest.render.workers",
    callbacks=[_observe_render_workers],
    unit="{worker}",
    description="render worker processes, by lane",
)


def watch_render_pool(lane: str, busy_seconds: Callable[[], float], workers: int) -> None:
    with _pools_lock:
        _render_pools[lane] = (busy_seconds, workers)


def unwatch_render_pool(lane: str) -> None:
    with _pools_lock:
        _render_pools.pop(lane, None)


events_published = _meter.create_counter(
    "ingest.events.published", unit="{event}", description="domain events published, by type"
)


class Reading:
    """A value the code updates and a gauge reads (from any thread: a float swap is atomic)."""

    def __init__(self) -> None:
        self.value = 0.0


_outbox_readings: list[Reading] = []


def _observe_outbox(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(round(r.value, 3)) for r in list(_outbox_readings)]


outbox_oldest_unpublished_age = _meter.create_observable_gauge(
    "ingest.outbox.oldest_unpublished_age",
    callbacks=[_observe_outbox],
    unit="s",
    description="seconds the oldest unpublished domain event has waited in the outbox",
)


def watch_outbox(reading: Reading) -> None:
    _outbox_readings.append(reading)


def unwatch_outbox(reading: Reading) -> None:
    if reading in _outbox_readings:
        _outbox_readings.remove(reading)


_registry: CollectorRegistry | None = None
_provider: MeterProvider | None = None


def configure_metrics(service: str, *, resource: Resource | None = None) -> MeterProvider:
    """Install a meter provider: Prometheus text for /metrics, OTLP when configured.

    Once per process (OpenTelemetry's global provider cannot be replaced): later calls
    return the provider already installed.
    """
    global _registry, _provider
    if _provider is not None:
        return _provider
    registry = CollectorRegistry(auto_describe=True)
    all_readers: list[MetricReader] = [PrometheusMetricReader(registry=registry)]
    if otlp_enabled("metrics"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        all_readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(
        resource=resource or build_resource(service), metric_readers=all_readers
    )
    metrics.set_meter_provider(provider)
    _registry, _provider = registry, provider
    return provider


def prometheus_text() -> bytes | None:
    """The metrics in Prometheus text format; None before `configure_metrics`."""
    return None if _registry is None else generate_latest(_registry)
