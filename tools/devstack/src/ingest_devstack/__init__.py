"""The local development stack: a moto server and the four services as OS processes.

Dev-only: `ingest demo`, the tests and the benchmarks use it; no image ships it (moto and
gunicorn are its dependencies, not the CLI's).
"""
