"""The README's settings table and its table of limits, from the settings classes themselves.

Run: `uv run python tools/settings_table.py` (both tables), or with `limits` (that one).
A limit is a field whose `json_schema_extra` has `"limit": [what, unit, the contributor
reads]`; units: bytes, count, ratio, pixels, px, seconds.
"""

from __future__ import annotations

from typing import cast

from ingest_api.settings import ApiSettings
from ingest_batcher.settings import BatcherSettings
from ingest_common.settings import IngestSettings
from ingest_indexer.settings import IndexerSettings
from ingest_previewer.settings import PreviewerSettings
from ingest_processor.backfill import BackfillSettings
from ingest_processor.settings import ProcessorSettings
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

SERVICE_SETTINGS: dict[str, type[IngestSettings]] = {
    "batcher": BatcherSettings,
    "processor": ProcessorSettings,
    "previewer": PreviewerSettings,
    "indexer": IndexerSettings,
    "api": ApiSettings,
}
# Commands with settings of their own beyond a service's (shown once, not per service).
COMMAND_SETTINGS: dict[str, tuple[type[IngestSettings], type[IngestSettings]]] = {
    "ingest backfill": (BackfillSettings, ProcessorSettings),
}


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("shown_default"), str):
        return str(extra["shown_default"])  # a default computed from other settings
    if field.default_factory is not None:
        return "CPUs available"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`" if value not in (None, "") else "unset"


def _row(cls: type[IngestSettings], name: str, where: str, default: str | None = None) -> str:
    """One table row; `default` replaces the field's own default when given."""
    field = cls.model_fields[name]
    names = " / ".join(f"`{n}`" for n in cls.environment_names(name))
    shown = _default(field) if default is None else default
    return f"| {names} | {shown} | {where} | {field.description or ''} |"


def settings_table() -> str:
    common = IngestSettings.model_fields
    lines = [
        "| variable | default | service | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in common.items():
        overrides = [
            f"{service} {_default(cls.model_fields[name])}"
            for service, cls in SERVICE_SETTINGS.items()
            if _default(cls.model_fields[name]) != _default(field)
        ]
        default = _default(field) + (f" ({', '.join(overrides)})" if overrides else "")
        lines.append(_row(IngestSettings, name, "all", default))
    for service, cls in SERVICE_SETTINGS.items():
        lines.extend(_row(cls, name, service) for name in cls.model_fields if name not in common)
    for command, (cls, base) in COMMAND_SETTINGS.items():
        lines.extend(
            _row(cls, name, command) for name in cls.model_fields if name not in base.model_fields
        )
    return "\n".join(lines)


def _limit_value(value: float, unit: str) -> str:
    if unit == "bytes":
        mib = value / 2**20
        return f"{mib:g} MiB" if mib >= 1 else f"{value:,.0f} bytes"
    if unit == "ratio":
        return f"{value:g}:1"
    if unit == "pixels":
        return f"{value / 1e6:g} Mpx"
    if unit == "px":
        return f"{value:g} px a side"
    if unit == "seconds":
        return f"{value:g} s"
    return f"{value:g}"


def limits_table() -> str:
    """What ingest refuses, at what size, which setting moves it, and what the contributor reads."""
    lines = [
        "| what | limit | setting | the contributor reads |",
        "|---|---|---|---|",
    ]
    for cls in SERVICE_SETTINGS.values():
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra
            if not isinstance(extra, dict) or "limit" not in extra:
                continue
            what, unit, reads = cast(list[str], extra["limit"])
            value = _limit_value(field.default, str(unit))
            lines.append(f"| {what} | {value} | `{cls.env(name)}` | {reads} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["limits"]:
        print(limits_table())
    else:
        print(settings_table())
        print()
        print(limits_table())
