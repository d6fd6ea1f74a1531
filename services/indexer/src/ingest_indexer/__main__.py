from ingest_indexer.main import run

run()
