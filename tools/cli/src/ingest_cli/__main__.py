from ingest_cli.main import run

run()
