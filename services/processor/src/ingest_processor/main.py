"""The processor: one image from q.render → PNG and WebP renditions → image ready."""

from __future__ import annotations

from ingest_common.runtime.service import Consumes, run_service
from ingest_common.settings import load_settings

from ingest_processor.handler import RenderHandler
from ingest_processor.settings import ProcessorSettings


def run() -> None:
    settings = load_settings(ProcessorSettings)
    run_service(settings, Consumes(settings.render_queue, RenderHandler.open))
