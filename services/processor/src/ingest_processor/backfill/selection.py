"""Which images a backfill renders, as SQL: the selection, the shard, staleness, the run's key."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ingest_processor.render import RenderSpec

# A shard owns an image by the last two bytes of its id. Image ids are uuid5 (SHA-1 of the
# image's names), so those bytes are uniform: shards get equal shares, and the same image
# always lands in the same shard, which is what lets each shard keep its own checkpoint.
MAX_SHARDS = 256


class SelectionError(ValueError):
    """The selection cannot be satisfied by the configured widths and formats."""


@dataclass(frozen=True)
class Selection:
    """Which ready images to consider. Filters combine with AND; ``everything`` is ``--all``."""

    everything: bool = False
    family: str | None = None
    product: uuid.UUID | None = None
    missing_format: str | None = None
    missing_width: int | None = None

    def __post_init__(self) -> None:
        narrowed = (self.family, self.product, self.missing_format, self.missing_width)
        if not self.everything and all(v is None for v in narrowed):
            raise SelectionError(
                "say what to backfill: --all, --family, --product, --missing-format "
                "or --missing-width"
            )

    def check(self, spec: RenderSpec) -> None:
        if self.missing_format is not None and self.missing_format not in spec.formats:
            raise SelectionError(
                f"{self.missing_format} is not a configured format (INGEST_RENDER_FORMATS="
                f"{json.dumps(list(spec.formats))}): nothing would render it"
            )
        if self.missing_width is not None and self.missing_width not in spec.widths:
            raise SelectionError(
                f"{self.missing_width} is not a configured width (INGEST_RENDER_WIDTHS="
                f"{json.dumps(list(spec.widths))}): add it there first"
            )

    def describe(self) -> str:
        parts = [
            f"family {self.family}" if self.family else "",
            f"product {self.product}" if self.product else "",
            f"missing {self.missing_format}" if self.missing_format else "",
            f"missing width {self.missing_width}" if self.missing_width else "",
        ]
        return ", ".join(p for p in parts if p) or "all images"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the images whose id hashes to ``index`` (see ``owns``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise SelectionError(f"shards must be 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise SelectionError(f"shard {self.index} does not exist among {self.count}")

    def owns(self, image: uuid.UUID) -> bool:
        """The Python twin of the SQL condition (tests check they agree)."""
        return (image.int & 0xFFFF) % self.count == self.index


class SelectionSql:
    """The selection, one shard of it and the target renditions as SQL on ``images i``.

    Every query takes ``$1`` (the keyset position: images after it), the filter's parameters,
    then the target (``renditions.target``) as JSON.
    """

    def __init__(
        self, selection: Selection, shard: Shard, target: list[dict[str, Any]], profile: str
    ) -> None:
        self.selection = selection
        self.shard = shard
        self.target = target
        self.profile = profile
        self._where, self._params = self._filter()

    def count(self) -> tuple[str, list[Any]]:
        """In scope past $1, and how many of those are stale."""
        query = f"""SELECT count(*) AS in_scope, count(*) FILTER (WHERE {self._stale()}) AS stale
                      FROM images i WHERE i.id > $1 AND {self._where}"""
        return query, [*self._params, self.target]

    def page(self, size: int) -> tuple[str, list[Any]]:
        """The next keyset page of stale images after $1, in id order."""
        query = f"""SELECT i.id, i.original_key, i.renditions FROM images i
                     WHERE i.id > $1 AND {self._where} AND {self._stale()}
                     ORDER BY i.id LIMIT ${len(self._params) + 3}"""
        return query, [*self._params, self.target, size]

    def run_key(self) -> str:
        """``backfill_runs.selection``: the same command on the same configuration resumes."""
        key: dict[str, Any] = {
            "filter": {
                "all": self.selection.everything,
                "family": self.selection.family,
                "product": str(self.selection.product) if self.selection.product else None,
                "missing_format": self.selection.missing_format,
                "missing_width": self.selection.missing_width,
            },
            "widths": list(dict.fromkeys(t["width"] for t in self.target)),
            "formats": list(dict.fromkeys(t["format"] for t in self.target)),
            "profile": self.profile,
        }
        # Unsharded runs keep the key they always had, so an interrupted one still resumes.
        if self.shard.count > 1:
            key["shard"] = [self.shard.index, self.shard.count]
        return json.dumps(key, sort_keys=True)

    def _filter(self) -> tuple[str, list[Any]]:
        """The selection and the shard as SQL conditions; parameters start at $2."""
        conditions = ["i.status = 'ready'"]
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params) + 1}"

        s = self.selection
        if s.product is not None:
            conditions.append(f"i.product_id = {param(s.product)}")
        if s.family is not None:
            conditions.append(
                "i.product_id IN (SELECT p.id FROM products p JOIN families f "
                f"ON f.id = p.family_id WHERE f.slug = {param(s.family)})"
            )
        if s.missing_format is not None:
            fmt = param([{"format": s.missing_format}])
            conditions.append(f"NOT i.renditions @> {fmt}::jsonb")
        if s.missing_width is not None:
            width = param([{"width": s.missing_width}])
            conditions.append(f"NOT i.renditions @> {width}::jsonb")
        if self.shard.count > 1:
            count, index = param(self.shard.count), param(self.shard.index)
            conditions.append(
                "((get_byte(uuid_send(i.id), 14) << 8) | get_byte(uuid_send(i.id), 15)) "
                f"% {count}::int = {index}::int"
            )
        return " AND ".join(conditions), params

    def _stale(self) -> str:
        """Not every target rendition, with the current profile, is in the row."""
        # One containment test per target rendition; the uncorrelated ARRAY is computed once.
        wanted = f"${len(self._params) + 2}::jsonb"
        return (
            "NOT (i.renditions @> ALL (ARRAY(SELECT jsonb_build_array(t) "
            f"FROM jsonb_array_elements({wanted}) t)))"
        )
