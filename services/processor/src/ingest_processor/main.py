"""The processor: one image from q.render → PNG and WebP renditions → image ready."""

from __future__ import annotations

from ingest_common.runtime.service import Consumes, run_service
from ingest_common.settings import load_settings

from ingest_processor.handler import RenderHandler, SlowRenderHandler
from ingest_processor.settings import ProcessorSettings


def run() -> None:
    settings = load_settings(ProcessorSettings)
    run_service(
        settings,
        Consumes(settings.render_queue, RenderHandler.open),
        # The slow lane holds one render per worker and one queued: no more than it renders.
        Consumes(
            settings.render_slow_queue,
            SlowRenderHandler.open,
            concurrency=2 * settings.render_slow_workers,
        ),
    )
