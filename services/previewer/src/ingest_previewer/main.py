"""The previewer: product ready (or the safety net) from q.preview → the family mosaic."""

from __future__ import annotations

from ingest_common.runtime.service import Consumes, run_service
from ingest_common.settings import load_settings

from ingest_previewer.handler import PreviewHandler
from ingest_previewer.settings import PreviewerSettings


def run() -> None:
    settings = load_settings(PreviewerSettings)
    run_service(settings, Consumes(settings.preview_queue, PreviewHandler.open))
