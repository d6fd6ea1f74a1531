from ingest_previewer.main import run

run()
