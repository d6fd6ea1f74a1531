from ingest_processor.main import run

run()
