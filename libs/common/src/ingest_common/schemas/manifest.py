"""The contributor's `manifest.json`: what a set is called, its licence, and its files.

The validation errors produced here are shown to contributors, who are not programmers:
every problem is one sentence that names the place in the JSON (`files[3].title`) and says
what was expected. That is why pydantic errors are translated by `describe_validation_error`
instead of being shown as they are.

Identity never comes from here: `contributor` is only checked against the uploader taken
from the S3 key (by the batcher).
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from ingest_common.errors import Refused

# The largest set a manifest may list, unless its reader says less: the batcher passes the
# archive's entry limit (minus manifest.json), so the two limits never disagree.
MAX_FILES = 5000
MAX_TAGS = 50
MAX_TAG_CHARS = 50
MAX_PATH_CHARS = 255
# A manifest with thousands of mistakes must not produce a page nobody reads.
MAX_REPORTED_PROBLEMS = 50

_SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")

License = Literal[
    "standard", "extended", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "mit", "apache-2.0"
]
ProductType = Literal["icon_set", "illustration_set"]


class ManifestInvalid(Refused):
    """The manifest cannot be used; `problems` are sentences for the contributor."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("manifest.json is not valid: " + "; ".join(problems))
        self.problems = problems


# --- paths -----------------------------------------------------------------------------


def normalize_relative_path(path: str) -> str:
    """Return the canonical form of a relative POSIX path, or raise ValueError (a sentence).

    Shared by the manifest and the ZIP extractor so that both sides compare the same
    strings: NFC (macOS writes decomposed names), `./` segments dropped.
    """
    if "\\" in path:
        raise ValueError(f'"{path}" contains a backslash (\\); use forward slashes (/)')
    if path.startswith("/"):
        raise ValueError(f'"{path}" is an absolute path; paths must be relative to the ZIP')
    if _DRIVE_LETTER.match(path):
        raise ValueError(f'"{path}" starts with a drive letter; paths must be relative')
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        raise ValueError(f"{path!r} contains control characters")
    segments = [s for s in unicodedata.normalize("NFC", path).split("/") if s != "."]
    if ".." in segments:
        raise ValueError(f'"{path}" contains "..", which would point outside the ZIP')
    if not segments or "" in segments:
        raise ValueError(f'"{path}" is not a valid file path (empty folder name)')
    return "/".join(segments)


def _check_svg_path(path: str) -> str:
    normalized = normalize_relative_path(path)
    if not normalized.lower().endswith(".svg"):
        raise ValueError(f'"{path}" must be the path of an .svg file')
    return normalized


def _dedupe(tags: list[str]) -> list[str]:
    # "Sun", "sun " and "sun" are one tag after normalization; keep the first position.
    return list(dict.fromkeys(tags))


Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=MAX_TAG_CHARS),
]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS), AfterValidator(_dedupe)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
SvgPath = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS), AfterValidator(_check_svg_path)
]


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    path: SvgPath
    title: Title
    tags: Tags = []


def _unique_paths(files: list[ManifestFile]) -> list[ManifestFile]:
    first_index: dict[str, int] = {}
    for index, file in enumerate(files):
        if file.path in first_index:
            raise ValueError(
                f'"{file.path}" is listed twice (files[{first_index[file.path]}] and '
                f"files[{index}]); list each file once"
            )
        first_index[file.path] = index
    return files


def _within_the_reader_s_limit(
    files: list[ManifestFile], info: pydantic.ValidationInfo
) -> list[ManifestFile]:
    limit = (info.context or {}).get("max_files", MAX_FILES)
    if len(files) > limit:
        raise PydanticCustomError(
            "too_long",
            "too many files",
            {"max_length": limit, "actual_length": len(files)},
        )
    return files


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: Literal[1] = 1
    contributor: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    product_type: ProductType
    family: Annotated[str, StringConstraints(min_length=2, max_length=64, pattern=_SLUG_PATTERN)]
    family_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
        | None
    ) = None
    title: Title
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=5000)] = ""
    tags: Tags = []
    license: License
    files: Annotated[
        list[ManifestFile],
        Field(min_length=1, max_length=MAX_FILES),
        AfterValidator(_unique_paths),
        AfterValidator(_within_the_reader_s_limit),
    ]


# --- parsing ---------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of two equal keys; the contributor meant one.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in manifest.json; use a number or text")


def _load_json(raw: bytes) -> object:
    if not raw.strip():
        raise ManifestInvalid(["manifest.json is empty"])
    try:
        # utf-8-sig: Windows editors often save UTF-8 with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestInvalid(
            [
                f"manifest.json is not UTF-8 text (unexpected byte at position {exc.start}); "
                "save it with the UTF-8 encoding"
            ]
        ) from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise ManifestInvalid(
            [
                f"manifest.json is not valid JSON: {exc.msg} at line {exc.lineno}, "
                f"column {exc.colno} (look for a missing comma, quote or bracket)"
            ]
        ) from None
    except _DuplicateKey as exc:
        raise ManifestInvalid(
            [f'the field "{exc}" appears twice in the same object; keep only one']
        ) from None
    except (ValueError, RecursionError) as exc:
        # Other ValueErrors: NaN/Infinity, integers with thousands of digits.
        message = str(exc) if isinstance(exc, ValueError) else "it is nested too deeply"
        raise ManifestInvalid([f"manifest.json cannot be read: {message}"]) from None


def parse_manifest(raw: bytes, *, max_files: int = MAX_FILES) -> Manifest:
    """Parse and validate manifest bytes; raise ManifestInvalid with readable problems.

    `max_files`: the most files the set may list (the batcher passes its archive limit).
    """
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise ManifestInvalid(
            [
                f"manifest.json must contain a JSON object {{ ... }} at the top level, "
                f"not {_kind(data)}"
            ]
        )
    try:
        return Manifest.model_validate(data, context={"max_files": max_files})
    except pydantic.ValidationError as exc:
        problems = describe_validation_error(exc)
        if len(problems) > MAX_REPORTED_PROBLEMS:
            hidden = len(problems) - MAX_REPORTED_PROBLEMS
            problems = [*problems[:MAX_REPORTED_PROBLEMS], f"… and {hidden} more problems"]
        raise ManifestInvalid(problems) from None


# --- turning pydantic errors into sentences --------------------------------------------

_EXPECTED = {
    "string_type": "text (in quotes)",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list [ ... ]",
    "dict_type": "an object { ... }",
    "model_type": "an object { ... }",
    "model_attributes_type": "an object { ... }",
}

_PATTERN_HINTS = {
    "family": (
        'must use only lowercase letters a-z, digits and single hyphens, like "weather-icons"'
    ),
}

# (singular, plural) for list-length sentences.
_LIST_NOUNS = {"files": ("file", "files"), "tags": ("tag", "tags")}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: object, limit: int = 40) -> str:
    shown = json.dumps(value, ensure_ascii=False) if _is_json(value) else repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _is_json(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


def format_location(loc: Sequence[int | str]) -> str:
    """('files', 3, 'title') -> 'files[3].title' — the way the JSON reads."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as list[ManifestFile] or X | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _field_at(loc: Sequence[int | str], root: type[BaseModel]) -> pydantic.fields.FieldInfo | None:
    """The field a location points to (list indexes are skipped), if it is a model field."""
    model: type[BaseModel] | None = root
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        field = model.model_fields[part]
        model = _model_class(field.annotation)
    return field


def _model_at(loc: Sequence[int | str], root: type[BaseModel]) -> type[BaseModel] | None:
    if not loc:
        return root
    field = _field_at(loc, root)
    return _model_class(field.annotation) if field is not None else None


def _literal_values(annotation: Any) -> list[Any]:
    """All Literal values found in an annotation (through Annotated/Optional)."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (Union, types.UnionType, Annotated):
        return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]
    return []


def _describe_one(error: Any, root: type[BaseModel]) -> str:
    kind: str = error["type"]
    loc: tuple[int | str, ...] = tuple(error["loc"])
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    where = format_location(loc)
    prefix = f"{where}: " if where else ""

    if kind == "missing":
        parent = format_location(loc[:-1])
        return f'{parent + ": " if parent else ""}missing required field "{loc[-1]}"'
    if kind == "extra_forbidden":
        return _describe_unknown_field(loc, root)
    if kind in _EXPECTED:
        return f"{prefix or 'the manifest: '}expected {_EXPECTED[kind]}, got {_kind(value)}"
    if kind == "literal_error":
        field = _field_at(loc, root)
        allowed = _literal_values(field.annotation) if field is not None else []
        choices = ", ".join(str(v) for v in allowed) if allowed else str(ctx.get("expected"))
        verb = "must be" if len(allowed) == 1 else "must be one of"
        return f"{prefix}{verb} {choices} (got {_show(value)})"
    if kind == "string_too_long":
        got = f" (got {len(value)})" if isinstance(value, str) else ""
        return f"{prefix}longer than {ctx['max_length']} characters{got}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return f"{prefix}must not be empty"
        got = f" (got {len(value)})" if isinstance(value, str) else ""
        return f"{prefix}shorter than {ctx['min_length']} characters{got}"
    if kind in ("too_long", "too_short"):
        return _describe_list_length(kind, loc, ctx, prefix)
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(loc[-1]) if loc else "", "contains characters not allowed")
        return f"{prefix}{hint} (got {_show(value)})"
    if kind == "value_error":
        return f"{prefix}{ctx.get('error', error['msg'])}"
    if kind == "json_invalid":
        return f"manifest.json is not valid JSON: {ctx.get('error', error['msg'])}"
    return f"{prefix}{error['msg']}"


def _describe_unknown_field(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    name = str(loc[-1])
    parent = format_location(loc[:-1])
    model = _model_at(loc[:-1], root)
    text = f'{parent + ": " if parent else ""}unknown field "{name}"'
    if model is None:
        return text
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f"{text} (allowed: {', '.join(allowed)}){hint}"


def _describe_list_length(
    kind: str, loc: tuple[int | str, ...], ctx: dict[str, Any], prefix: str
) -> str:
    one, many = _LIST_NOUNS.get(str(loc[-1]) if loc else "", ("entry", "entries"))
    actual = ctx.get("actual_length")
    if kind == "too_long":
        return f"{prefix}at most {ctx['max_length']} {many} allowed (got {actual})"
    minimum = ctx["min_length"]
    return f"{prefix}must list at least {minimum} {one if minimum == 1 else many} (got {actual})"


def describe_validation_error(exc: pydantic.ValidationError) -> list[str]:
    """One contributor-readable sentence per pydantic error, in pydantic's order."""
    root: type[BaseModel] = ManifestFile if exc.title == ManifestFile.__name__ else Manifest
    return [_describe_one(error, root) for error in exc.errors(include_url=False)]
