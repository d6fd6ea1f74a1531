"""SVG test corpora made by code (no files to keep in sync): see odd.py."""
