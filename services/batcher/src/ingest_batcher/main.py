"""The batcher: S3 upload events from q.batch → products, images and render messages."""

from __future__ import annotations

from ingest_common.runtime.service import Consumes, run_service
from ingest_common.settings import load_settings

from ingest_batcher.handler import BatchHandler
from ingest_batcher.settings import BatcherSettings


def run() -> None:
    settings = load_settings(BatcherSettings)
    run_service(settings, Consumes(settings.batch_queue, BatchHandler.open))
