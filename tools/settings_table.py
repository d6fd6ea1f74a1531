"""The README's settings table, from the settings classes themselves.

Run: `uv run python tools/settings_table.py`
"""

from __future__ import annotations

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
}
# Commands with settings of their own beyond a service's (shown once, not per service).
COMMAND_SETTINGS: dict[str, tuple[type[IngestSettings], type[IngestSettings]]] = {
    "ingest backfill": (BackfillSettings, ProcessorSettings),
}


def env_names(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c) for c in choices]
    return [f"INGEST_{name.upper()}"]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "CPUs available"
    if field.default is PydanticUndefined:
        return "required"
    value = field.default
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value}`" if value not in (None, "") else "unset"


def _row(name: str, field: FieldInfo, where: str, default: str | None = None) -> str:
    """One table row; `default` replaces the field's own default when given."""
    names = " / ".join(f"`{n}`" for n in env_names(name, field))
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
            f"{service} `{cls.model_fields[name].default}`"
            for service, cls in SERVICE_SETTINGS.items()
            if cls.model_fields[name].default != field.default
        ]
        default = _default(field) + (f" ({', '.join(overrides)})" if overrides else "")
        lines.append(_row(name, field, "all", default))
    for service, cls in SERVICE_SETTINGS.items():
        for name, field in cls.model_fields.items():
            if name not in common:
                lines.append(_row(name, field, service))
    for command, (cls, base) in COMMAND_SETTINGS.items():
        for name, field in cls.model_fields.items():
            if name not in base.model_fields:
                lines.append(_row(name, field, command))
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
