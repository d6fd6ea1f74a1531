"""Who uploaded an object, and whether its key is an upload: identity comes from the key,
never from the manifest.

The S3 notification sends every object under `uploads/` (a suffix filter is
case-sensitive and would drop `Set.ZIP` without a word): the batcher decides here, and
refuses with a reason the contributor reads in `ingest status`.
"""

from __future__ import annotations

import re

# uploads/<contributor>/<name> — contributor ids are what IAM policies grant prefixes on.
_UPLOAD_KEY = re.compile(r"^uploads/(?P<contributor>[a-z0-9][a-z0-9_-]{0,62})/(?P<name>[^/]+)$")

KEY_RULE = "uploads must be stored as uploads/<contributor>/<name>.zip"


def contributor_of(key: str) -> str | None:
    """The contributor whose prefix holds `key`, whatever the object is."""
    match = _UPLOAD_KEY.match(key)
    return match["contributor"] if match else None


def is_folder_marker(key: str) -> bool:
    """An empty "folder" a console made (`uploads/acme/`): not an upload, nothing to say."""
    return key.endswith("/")


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an upload, in the contributor's words; None if it can."""
    match = _UPLOAD_KEY.match(key)
    if match is None:
        return f"{key!r} was refused: {KEY_RULE}."
    if not match["name"].lower().endswith(".zip"):
        return (
            f"{match['name']!r} was refused: a set is uploaded as a ZIP archive whose name ends"
            " in .zip"
        )
    return None
