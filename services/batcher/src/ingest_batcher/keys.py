"""Who uploaded an object: identity comes from the key, never from the manifest."""

from __future__ import annotations

import re

# uploads/<contributor>/<name>.zip — contributor ids are what IAM policies grant prefixes on.
_UPLOAD_KEY = re.compile(r"^uploads/(?P<contributor>[a-z0-9][a-z0-9_-]{0,62})/[^/]+\.zip$")

KEY_RULE = "uploads must be stored as uploads/<contributor>/<name>.zip"


def contributor_of(key: str) -> str | None:
    match = _UPLOAD_KEY.match(key)
    return match["contributor"] if match else None
