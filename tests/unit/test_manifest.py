"""The manifest model and the sentences a contributor reads when it is wrong."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from ingest_common.schemas.manifest import (
    MAX_FILES,
    MAX_REPORTED_PROBLEMS,
    Manifest,
    ManifestFile,
    ManifestInvalid,
    describe_validation_error,
    format_location,
    normalize_relative_path,
    parse_manifest,
)


def valid() -> dict[str, Any]:
    return {
        "product_type": "icon_set",
        "family": "weather-icons",
        "title": "Weather",
        "license": "mit",
        "files": [
            {"path": "sun.svg", "title": "Sun", "tags": ["sun"]},
            {"path": "clouds/rain.svg", "title": "Rain"},
        ],
    }


def problems_for(document: object) -> list[str]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(raw)
    assert caught.value.reason == "manifest.json is not valid: " + "; ".join(caught.value.problems)
    return caught.value.problems


def only_problem(document: object) -> str:
    problems = problems_for(document)
    assert len(problems) == 1, problems
    return problems[0]


# --- accepted and normalized ------------------------------------------------------------


def test_minimal_manifest_gets_defaults() -> None:
    manifest = parse_manifest(json.dumps(valid()).encode())
    assert manifest.schema_version == 1
    assert manifest.contributor is None
    assert manifest.family_name is None
    assert manifest.description == ""
    assert manifest.tags == []
    assert [f.path for f in manifest.files] == ["sun.svg", "clouds/rain.svg"]
    assert manifest.files[1].tags == []


def test_text_is_stripped_and_tags_normalized() -> None:
    document = valid() | {
        "title": "  Weather  ",
        "tags": [" Sun", "sun ", "RAIN", "sun", "cloud"],
        "family_name": " Weather Icons ",
    }
    manifest = parse_manifest(json.dumps(document).encode())
    assert manifest.title == "Weather"
    assert manifest.family_name == "Weather Icons"
    assert manifest.tags == ["sun", "rain", "cloud"]  # lowercased, deduplicated, in order


def test_paths_are_normalized_and_svg_suffix_is_case_insensitive() -> None:
    document = valid()
    document["files"] = [{"path": "./icons/./Sun.SVG", "title": "Sun"}]
    manifest = parse_manifest(json.dumps(document).encode())
    assert manifest.files[0].path == "icons/Sun.SVG"


def test_byte_order_mark_is_accepted() -> None:
    manifest = parse_manifest(b"\xef\xbb\xbf" + json.dumps(valid()).encode())
    assert manifest.family == "weather-icons"


def test_model_is_frozen() -> None:
    manifest = parse_manifest(json.dumps(valid()).encode())
    with pytest.raises(pydantic.ValidationError):
        manifest.title = "other"  # type: ignore[misc]


# --- not even JSON ---------------------------------------------------------------------


def test_not_utf8() -> None:
    assert "not UTF-8" in only_problem(b'{"title": "caf\xe9"}')


def test_not_json_names_line_and_column() -> None:
    problem = only_problem(b'{\n  "title": "a"\n  "family": "b"\n}')
    assert "not valid JSON" in problem
    assert "line 3, column 3" in problem


def test_empty_file() -> None:
    assert "empty" in only_problem(b"  \n")


def test_top_level_must_be_an_object() -> None:
    assert "must contain a JSON object" in only_problem(b"[1, 2]")


def test_duplicate_keys_are_refused() -> None:
    problem = only_problem(b'{"title": "a", "title": "b"}')
    assert '"title" appears twice' in problem


def test_nan_is_refused() -> None:
    assert "NaN" in only_problem(b'{"title": NaN}')


# --- one sentence per pydantic error ----------------------------------------------------


def test_missing_required_field() -> None:
    document = valid()
    del document["license"]
    assert only_problem(document) == 'missing required field "license"'


def test_missing_field_in_a_file_names_its_index() -> None:
    document = valid()
    document["files"].append({"path": "x.svg"})
    assert only_problem(document) == 'files[2]: missing required field "title"'


def test_unknown_field_lists_allowed_and_suggests() -> None:
    problem = only_problem(valid() | {"colour": "red"})
    assert problem.startswith('unknown field "colour" (allowed: schema_version, contributor,')
    assert "license" in problem
    problem = only_problem(valid() | {"licence": "mit"})
    assert 'did you mean "license"?' in problem


def test_unknown_field_in_a_file() -> None:
    document = valid()
    document["files"][0]["colour"] = "red"
    assert only_problem(document) == 'files[0]: unknown field "colour" (allowed: path, title, tags)'


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("title", 12, "title: expected text (in quotes), got a number"),
        ("family_name", True, "family_name: expected text (in quotes), got true/false"),
        ("tags", "sun", "tags: expected a list [ ... ], got text"),
        ("files", {"a": 1}, "files: expected a list [ ... ], got an object"),
        ("contributor", None, None),  # null is fine for optional fields
    ],
)
def test_wrong_types(field: str, value: object, expected: str | None) -> None:
    document = valid() | {field: value}
    if expected is None:
        parse_manifest(json.dumps(document).encode())
    else:
        assert only_problem(document) == expected


def test_strict_mode_does_not_coerce() -> None:
    # strict: "1" is not 1, and 1 is not "1".
    assert only_problem(valid() | {"schema_version": "1"}) == 'schema_version: must be 1 (got "1")'
    document = valid()
    document["files"][0]["title"] = 1
    assert only_problem(document) == "files[0].title: expected text (in quotes), got a number"


def test_file_entry_that_is_not_an_object() -> None:
    document = valid()
    document["files"][1] = "rain.svg"
    assert only_problem(document) == "files[1]: expected an object { ... }, got text"


def test_literal_lists_the_choices() -> None:
    assert only_problem(valid() | {"license": "gpl"}) == (
        "license: must be one of standard, extended, cc0-1.0, cc-by-4.0, cc-by-sa-4.0, mit, "
        'apache-2.0 (got "gpl")'
    )
    assert "icon_set, illustration_set" in only_problem(valid() | {"product_type": "font"})


def test_overlong_strings() -> None:
    document = valid() | {"tags": ["ok", "sun", "x" * 73]}
    assert only_problem(document) == "tags[2]: longer than 50 characters (got 73)"
    assert only_problem(valid() | {"title": "t" * 201}) == (
        "title: longer than 200 characters (got 201)"
    )
    assert "longer than 5000 characters" in only_problem(valid() | {"description": "d" * 5001})
    assert "longer than 120 characters" in only_problem(valid() | {"family_name": "n" * 121})
    document = valid()
    document["files"][0]["path"] = "a" * 300 + ".svg"
    assert only_problem(document) == "files[0].path: longer than 255 characters (got 304)"


def test_blank_strings() -> None:
    assert only_problem(valid() | {"title": "   "}) == "title: must not be empty"
    assert only_problem(valid() | {"tags": ["sun", " "]}) == "tags[1]: must not be empty"
    assert "family: shorter than 2 characters (got 1)" in only_problem(valid() | {"family": "w"})


def test_family_slug_pattern() -> None:
    problem = only_problem(valid() | {"family": "Weather Icons"})
    assert problem.startswith("family: must use only lowercase letters a-z, digits and single")
    assert '(got "Weather Icons")' in problem
    assert "family:" in only_problem(valid() | {"family": "double--hyphen"})


def test_list_lengths() -> None:
    assert only_problem(valid() | {"files": []}) == "files: must list at least 1 file (got 0)"
    tags = [f"t{i}" for i in range(51)]
    assert only_problem(valid() | {"tags": tags}) == "tags: at most 50 tags allowed (got 51)"
    files = [{"path": f"{i}.svg", "title": "x"} for i in range(MAX_FILES + 1)]
    assert (
        only_problem(valid() | {"files": files}) == "files: at most 5000 files allowed (got 5001)"
    )


def test_duplicate_paths() -> None:
    document = valid()
    document["files"].append({"path": "./sun.svg", "title": "Sun again"})
    assert only_problem(document) == (
        'files: "sun.svg" is listed twice (files[0] and files[2]); list each file once'
    )


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../sun.svg", '".."'),
        ("icons/../../sun.svg", '".."'),
        ("/etc/sun.svg", "absolute"),
        ("icons\\sun.svg", "backslash"),
        ("C:/sun.svg", "drive letter"),
        ("icons//sun.svg", "empty folder name"),
        ("sun.png", "must be the path of an .svg file"),
        ("sun\x00.svg", "control characters"),
    ],
)
def test_unsafe_or_wrong_paths(path: str, words: str) -> None:
    document = valid()
    document["files"][0]["path"] = path
    problem = only_problem(document)
    assert problem.startswith("files[0].path: ")
    assert words in problem


def test_many_problems_are_reported_together_and_capped() -> None:
    document = valid()
    document["files"] = [{"path": f"{i}.svg", "title": i} for i in range(80)]
    problems = problems_for(document | {"license": "gpl"})
    assert len(problems) == MAX_REPORTED_PROBLEMS + 1
    assert problems[0].startswith("license: ")
    assert problems[-1] == "… and 31 more problems"


def test_describe_validation_error_directly() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ManifestFile.model_validate({"path": "a.svg", "title": "", "size": 3})
    assert describe_validation_error(caught.value) == [
        "title: must not be empty",
        'unknown field "size" (allowed: path, title, tags)',
    ]


def test_describe_falls_back_to_pydantic_message() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Manifest.model_validate_json(b"{not json")
    [problem] = describe_validation_error(caught.value)
    assert problem.startswith("manifest.json is not valid JSON")


def test_format_location() -> None:
    assert format_location(("files", 3, "title")) == "files[3].title"
    assert format_location(("tags", 2)) == "tags[2]"
    assert format_location(()) == ""


def test_normalize_relative_path_is_nfc() -> None:
    decomposed = "cafe\u0301.svg"  # how macOS spells "café.svg"
    assert normalize_relative_path(decomposed) == "caf\u00e9.svg"
    assert normalize_relative_path("./a/./b.svg") == "a/b.svg"


def test_the_reader_sets_the_most_files_a_set_may_list() -> None:
    """The batcher passes its archive's entry limit: the two limits agree."""
    document = valid()
    document["files"] = [{"path": f"{i}.svg", "title": "x"} for i in range(4)]
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(json.dumps(document).encode(), max_files=3)
    assert caught.value.problems == ["files: at most 3 files allowed (got 4)"]
    assert len(parse_manifest(json.dumps(document).encode(), max_files=4).files) == 4
