"""The indexer: a product from q.index → the search backend."""

from __future__ import annotations

from ingest_common.runtime.service import Consumes, run_service
from ingest_common.settings import load_settings

from ingest_indexer.handler import IndexHandler
from ingest_indexer.settings import IndexerSettings


def run() -> None:
    settings = load_settings(IndexerSettings)
    run_service(settings, Consumes(settings.index_queue, IndexHandler.open))
