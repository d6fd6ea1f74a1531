"""Cross-check the manifest against the files actually in the ZIP: what will be ingested.

Every mismatch becomes a `FileProblem` for that one file (the rest of the set goes on); only
a set with no acceptable image at all is rejected as a whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ingest_common.schemas.manifest import Manifest

from ingest_batcher.archive import ArchiveLimits, ArchiveRejected, ExtractedArchive, FileProblem
from ingest_batcher.svgcheck import check_svg

# Files a contributor legitimately ships next to the SVGs (the CLI zips LICENSE itself):
# not images, not listed, and not worth a complaint.
_COMPANION_FILES = {"license", "license.txt", "license.md", "readme", "readme.txt", "readme.md"}
# How many reasons the whole-set rejection quotes before "…".
_QUOTED_REASONS = 3


@dataclass(frozen=True)
class PlannedImage:
    path: str
    title: str
    tags: tuple[str, ...]
    data: bytes
    content_hash: str  # sha256 hex of data
    position: int  # index in the manifest's `files` (stable; gaps where a file failed)


@dataclass
class UploadPlan:
    manifest: Manifest
    images: list[PlannedImage]
    problems: list[FileProblem]


def _case_hint(path: str, others: set[str]) -> str:
    """Point at a name that differs only in letter case: the most common mismatch."""
    for other in sorted(others):
        if other.lower() == path.lower() and other != path:
            return f' (the ZIP has "{other}"; names must match exactly, including case)'
    return ""


def _unlisted(archive: ExtractedArchive, listed: set[str]) -> list[FileProblem]:
    return [
        FileProblem(path, "in the ZIP but not listed in manifest.json" + _case_hint(path, listed))
        for path in archive.files
        if path not in listed and path.rsplit("/", 1)[-1].lower() not in _COMPANION_FILES
    ]


def plan_upload(
    archive: ExtractedArchive,
    manifest: Manifest,
    *,
    max_svg_bytes: int = ArchiveLimits.max_file_bytes,
) -> UploadPlan:
    """Match manifest entries to ZIP files; raise ArchiveRejected if no image is usable."""
    listed = {f.path for f in manifest.files}
    already_reported = {p.path for p in archive.problems}
    problems = [*archive.problems, *_unlisted(archive, listed)]
    images: list[PlannedImage] = []
    first_with_hash: dict[str, str] = {}

    for position, entry in enumerate(manifest.files):
        data = archive.files.get(entry.path)
        if data is None:
            # A file the extractor refused has been explained already.
            if entry.path not in already_reported:
                hint = _case_hint(entry.path, set(archive.files))
                problems.append(
                    FileProblem(entry.path, "listed in manifest.json but not in the ZIP" + hint)
                )
            continue
        reason = check_svg(data, max_svg_bytes)
        if reason is not None:
            problems.append(FileProblem(entry.path, reason))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in first_with_hash:
            # The database keys images on content; a second copy would be a silent no-op.
            problems.append(FileProblem(entry.path, f"same content as {first_with_hash[digest]}"))
            continue
        first_with_hash[digest] = entry.path
        images.append(
            PlannedImage(entry.path, entry.title, tuple(entry.tags), data, digest, position)
        )

    if not images:
        raise ArchiveRejected(_nothing_accepted(len(manifest.files), listed, problems))
    return UploadPlan(manifest=manifest, images=images, problems=problems)


def _nothing_accepted(count: int, listed: set[str], problems: list[FileProblem]) -> str:
    # Quote the listed files' own reasons first: they are why nothing is left.
    ordered = sorted(problems, key=lambda p: p.path not in listed)
    quoted = "; ".join(f"{p.path}: {p.reason}" for p in ordered[:_QUOTED_REASONS])
    more = " …" if len(problems) > _QUOTED_REASONS else ""
    noun = "file" if count == 1 else "files"
    return f"none of the {count} {noun} could be accepted: {quoted}{more}"
