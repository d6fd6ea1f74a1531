"""The HTTP API of ingest: the contributors' front door (uploads, live status) and the
published products and families."""
