"""plan_upload: the manifest cross-checked against the files the ZIP really contains."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from ingest_batcher.archive import ArchiveRejected, ExtractedArchive, FileProblem
from ingest_batcher.plan import PlannedImage, plan_upload
from ingest_common.schemas.manifest import Manifest, parse_manifest

from tests.svgs import BOOTSTRAP_CARET_UP_FILL, MDI_AB_TESTING, MDI_ALPHA_M


def manifest(*files: dict[str, Any]) -> Manifest:
    document = {
        "product_type": "icon_set",
        "family": "letters",
        "title": "Letters",
        "license": "apache-2.0",
        "files": list(files),
    }
    return parse_manifest(json.dumps(document).encode())


def archive(files: dict[str, bytes], problems: list[FileProblem] | None = None) -> ExtractedArchive:
    return ExtractedArchive(manifest=b"{}", files=files, problems=problems or [])


def reasons(problems: list[FileProblem]) -> dict[str, str]:
    return {p.path: p.reason for p in problems}


def test_images_follow_the_manifest_order() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "icons/ab.svg": MDI_AB_TESTING}),
        manifest(
            {"path": "icons/ab.svg", "title": "A/B testing", "tags": ["Test", "ab"]},
            {"path": "m.svg", "title": "M"},
        ),
    )
    assert plan.problems == []
    assert plan.images == [
        PlannedImage(
            path="icons/ab.svg",
            title="A/B testing",
            tags=("test", "ab"),
            data=MDI_AB_TESTING,
            content_hash=hashlib.sha256(MDI_AB_TESTING).hexdigest(),
            position=0,
        ),
        PlannedImage(
            path="m.svg",
            title="M",
            tags=(),
            data=MDI_ALPHA_M,
            content_hash=hashlib.sha256(MDI_ALPHA_M).hexdigest(),
            position=1,
        ),
    ]


def test_listed_but_missing() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M}),
        manifest({"path": "m.svg", "title": "M"}, {"path": "gone.svg", "title": "Gone"}),
    )
    assert [i.path for i in plan.images] == ["m.svg"]
    assert plan.problems == [FileProblem("gone.svg", "listed in manifest.json but not in the ZIP")]


def test_present_but_unlisted() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "extra.svg": MDI_AB_TESTING, "notes.txt": b"hi"}),
        manifest({"path": "m.svg", "title": "M"}),
    )
    assert reasons(plan.problems) == {
        "extra.svg": "in the ZIP but not listed in manifest.json",
        "notes.txt": "in the ZIP but not listed in manifest.json",
    }


def test_license_and_readme_are_not_complaints() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "LICENSE": b"MIT", "docs/README.md": b"# hi"}),
        manifest({"path": "m.svg", "title": "M"}),
    )
    assert plan.problems == []


def test_letter_case_mismatch_gets_a_hint() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "Caret.svg": BOOTSTRAP_CARET_UP_FILL}),
        manifest({"path": "m.svg", "title": "M"}, {"path": "caret.svg", "title": "Caret"}),
    )
    found = reasons(plan.problems)
    assert found["caret.svg"].startswith("listed in manifest.json but not in the ZIP")
    assert 'the ZIP has "Caret.svg"' in found["caret.svg"]
    assert found["Caret.svg"].startswith("in the ZIP but not listed in manifest.json")


def test_unsafe_svg_is_refused_with_its_reason() -> None:
    evil = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "evil.svg": evil, "photo.svg": png}),
        manifest(
            {"path": "m.svg", "title": "M"},
            {"path": "evil.svg", "title": "Evil"},
            {"path": "photo.svg", "title": "Photo"},
        ),
    )
    assert [i.path for i in plan.images] == ["m.svg"]
    found = reasons(plan.problems)
    assert "<script>" in found["evil.svg"]
    assert "this is a PNG image renamed .svg" in found["photo.svg"]


def test_svg_size_limit_is_applied() -> None:
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M, "ab.svg": MDI_AB_TESTING}),
        manifest({"path": "m.svg", "title": "M"}, {"path": "ab.svg", "title": "AB"}),
        max_svg_bytes=200,
    )
    assert [i.path for i in plan.images] == ["m.svg"]
    assert "larger than the limit of 200 bytes" in reasons(plan.problems)["ab.svg"]


def test_identical_content_keeps_the_first() -> None:
    plan = plan_upload(
        archive({"a.svg": MDI_ALPHA_M, "b.svg": MDI_AB_TESTING, "copy.svg": MDI_ALPHA_M}),
        manifest(
            {"path": "a.svg", "title": "A"},
            {"path": "b.svg", "title": "B"},
            {"path": "copy.svg", "title": "Copy"},
        ),
    )
    assert [(i.path, i.position) for i in plan.images] == [("a.svg", 0), ("b.svg", 1)]
    assert plan.problems == [FileProblem("copy.svg", "same content as a.svg")]


def test_archive_problems_are_carried_and_not_reported_twice() -> None:
    carried = FileProblem("link.svg", "symbolic links are not allowed")
    plan = plan_upload(
        archive({"m.svg": MDI_ALPHA_M}, [carried]),
        manifest({"path": "m.svg", "title": "M"}, {"path": "link.svg", "title": "Link"}),
    )
    assert plan.problems == [carried]


def test_positions_are_manifest_indexes() -> None:
    plan = plan_upload(
        archive({"b.svg": MDI_AB_TESTING, "c.svg": BOOTSTRAP_CARET_UP_FILL}),
        manifest(
            {"path": "a.svg", "title": "A"},
            {"path": "b.svg", "title": "B"},
            {"path": "c.svg", "title": "C"},
        ),
    )
    assert [(i.path, i.position) for i in plan.images] == [("b.svg", 1), ("c.svg", 2)]


def test_nothing_acceptable_rejects_the_set() -> None:
    with pytest.raises(ArchiveRejected) as caught:
        plan_upload(
            archive(
                {"junk.txt": b"x", "a.svg": b"", "b.svg": b"<svg/>"},
                [FileProblem("../x.svg", "unsafe file name")],
            ),
            manifest({"path": "a.svg", "title": "A"}, {"path": "b.svg", "title": "B"}),
        )
    reason = caught.value.reason
    assert reason.startswith("none of the 2 files could be accepted: ")
    # The listed files' own reasons come first.
    assert "a.svg: the file is empty; b.svg: the <svg> element has no xmlns" in reason
    assert reason.endswith(" …")
