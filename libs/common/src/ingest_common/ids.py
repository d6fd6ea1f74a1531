"""Deterministic ids: the same input always names the same row.

Redelivered messages and retried uploads therefore land on the rows they created the
first time, which is what makes every handler idempotent without extra bookkeeping.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6c1a3f0e-3d7b-4b8e-9a51-0f1e2d3c4b5a")


def upload_id(bucket: str, key: str, etag: str) -> uuid.UUID:
    """The id of one version of an uploaded object; clients can compute it from the PUT."""
    return uuid.uuid5(_NAMESPACE, f"upload:{bucket}/{key}#{etag.strip(chr(34))}")


def product_id(upload: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"product:{upload}")


def image_id(product: uuid.UUID, upload: uuid.UUID, content_hash: str) -> uuid.UUID:
    """One image of a product, as the version `upload` added it (its content names it: a
    later version that keeps the content keeps the image)."""
    return uuid.uuid5(_NAMESPACE, f"image:{product}/{upload}/{content_hash}")


def family_id(slug: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"family:{slug}")
