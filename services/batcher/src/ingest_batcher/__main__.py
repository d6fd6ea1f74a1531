from ingest_batcher.main import run

run()
