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


def _default(field: FieldInfo) -> str:
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
            f"{service} `{cls.model_fields[name].default}`"
            for service, cls in SERVICE_SETTINGS.items()
            if cls.model_fields[name].default != field.default
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


if __name__ == "__main__":
    print(settings_table())
