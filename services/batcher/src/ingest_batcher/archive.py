"""Safe extraction of a contributor's ZIP, entirely in memory and within hard limits.

Nothing is ever written to disk by an entry's name and nothing is read without a cap; the
sizes written in the ZIP's headers are only used to refuse early, never trusted to bound a
read. Two outcomes for trouble, following the design's "one bad file never blocks the rest":

- `ArchiveRejected`: the set as a whole cannot be processed (not a ZIP, damaged central
  directory, bombs, no usable manifest.json);
- `FileProblem`: one entry is refused (unsafe name, symlink, encrypted, too big, damaged, ...)
  and the others go on.

Every reason is one sentence for the contributor.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO

from ingest_common.errors import Refused
from ingest_common.schemas.manifest import normalize_relative_path

MiB = 1024 * 1024
MANIFEST_NAME = "manifest.json"

_READ_CHUNK = 64 * 1024
_UTF8_NAME_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
# A generous size for one central-directory record (46 bytes + name + extra + comment); with
# max_entries it bounds the memory zipfile spends parsing the directory, before it parses it.
_MAX_CENTRAL_RECORD_BYTES = 2048
_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz", ".zst")
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",  # ZIP
    b"PK\x05\x06",  # empty ZIP
    b"\x1f\x8b",  # gzip
    b"7z\xbc\xaf\x27\x1c",  # 7-Zip
    b"Rar!\x1a\x07",  # RAR
    b"\xfd7zXZ\x00",  # xz
)


@dataclass(frozen=True)
class ArchiveLimits:
    # These defaults are also BatcherSettings' defaults (settings.py reads them from here).
    max_archive_bytes: int = 200 * MiB
    max_entries: int = 2000
    max_file_bytes: int = 5 * MiB  # per entry, uncompressed
    max_total_bytes: int = 500 * MiB  # uncompressed sum, declared and actually read
    max_compression_ratio: float = 100.0
    max_manifest_bytes: int = 1 * MiB
    # Below this size a high ratio cannot hurt (the per-file cap is far away) and a tiny
    # repetitive SVG can legitimately compress 100:1, so the ratio is not checked.
    min_ratio_check_bytes: int = 64 * 1024


class ArchiveRejected(Refused):
    """The whole set is rejected; `reason` is one sentence for the contributor."""


@dataclass(frozen=True)
class FileProblem:
    """One file is rejected (the rest of the set goes on)."""

    path: str
    reason: str


@dataclass
class ExtractedArchive:
    manifest: bytes
    files: dict[str, bytes]  # normalized path -> content
    problems: list[FileProblem] = field(default_factory=list)


@dataclass
class _Entry:
    info: zipfile.ZipInfo
    path: str | None  # normalized (None when the name itself is unusable)
    problem: str | None

    @property
    def shown_name(self) -> str:
        return self.path if self.path is not None else self.info.filename


def _mib(size: int) -> str:
    return f"{size / MiB:.1f} MiB"


# --- opening ---------------------------------------------------------------------------


@contextmanager
def _open_zip(
    source: str | os.PathLike[str] | IO[bytes], limits: ArchiveLimits
) -> Iterator[zipfile.ZipFile]:
    with ExitStack() as stack:
        if isinstance(source, str | os.PathLike):
            fp: IO[bytes] = stack.enter_context(open(source, "rb"))
        else:
            fp = _seekable(source, limits)
        size = fp.seek(0, os.SEEK_END)
        if size > limits.max_archive_bytes:
            raise ArchiveRejected(
                f"the ZIP is {_mib(size)}, larger than the {_mib(limits.max_archive_bytes)} limit"
            )
        _precheck_central_directory(fp, size, limits)
        try:
            zf = stack.enter_context(zipfile.ZipFile(fp))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError):
            raise ArchiveRejected(
                "this is not a ZIP file, or it is damaged or incomplete; please upload it again"
            ) from None
        yield zf


def _seekable(source: IO[bytes], limits: ArchiveLimits) -> IO[bytes]:
    if source.seekable():
        return source
    # zipfile needs to seek; buffer a stream, but never more than the limit allows.
    data = source.read(limits.max_archive_bytes + 1)
    return io.BytesIO(data)


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def _central_directory_extent(fp: IO[bytes], size: int) -> tuple[int, int] | None:
    """(declared entry count, central directory bytes) from the end record, or None."""
    tail_length = min(size, _EOCD.size + 0xFFFF)  # the record ends with a comment < 64 KiB
    fp.seek(size - tail_length)
    tail = fp.read(tail_length)
    # Like zipfile: the record without a comment sits exactly at the end; otherwise search.
    at = len(tail) - _EOCD.size
    if not tail.startswith(b"PK\x05\x06", at):
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _EOCD.size > len(tail):
        return None
    fields = _EOCD.unpack_from(tail, at)
    entries, cd_size = fields[4], fields[5]
    locator_at = at - _ZIP64_LOCATOR.size
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and locator_at >= 0:
        locator = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
        if locator[0] == b"PK\x06\x07":
            fp.seek(locator[2])
            record = fp.read(_ZIP64_EOCD.size)
            if len(record) == _ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
                z64 = _ZIP64_EOCD.unpack(record)
                entries, cd_size = z64[7], z64[8]
    return entries, cd_size


def _precheck_central_directory(fp: IO[bytes], size: int, limits: ArchiveLimits) -> None:
    # zipfile reads the whole central directory and builds an object per entry before we
    # can count them: an entry-count bomb must be refused before zipfile sees it.
    extent = _central_directory_extent(fp, size)
    fp.seek(0)
    if extent is None:
        return  # zipfile will say it is not a ZIP
    entries, cd_size = extent
    if entries > limits.max_entries or cd_size > limits.max_entries * _MAX_CENTRAL_RECORD_BYTES:
        raise _too_many_entries(entries, limits)


def _too_many_entries(count: int, limits: ArchiveLimits) -> ArchiveRejected:
    return ArchiveRejected(
        f"the ZIP contains {count} entries, more than the limit of {limits.max_entries}"
    )


# --- screening entries by their header (nothing is read yet) ---------------------------


def _is_junk(name: str) -> bool:
    """Files that macOS/Windows add on their own; contributors never meant to upload them."""
    parts = name.split("/")
    base = parts[-1]
    return parts[0] == "__MACOSX" or base.lower() in _JUNK_NAMES or base.startswith("._")


def _decoded_name(info: zipfile.ZipInfo) -> str | None:
    """The entry's name as UTF-8, or None if it is not UTF-8.

    Without the UTF-8 flag zipfile decodes names as cp437. Many tools (Info-ZIP, old 7-Zip)
    write UTF-8 bytes without setting the flag; those names are recovered. Anything else is
    a legacy code page we cannot tell apart, so it is refused rather than guessed.
    """
    name = info.filename
    if info.flag_bits & _UTF8_NAME_FLAG or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None


def _type_problem(info: zipfile.ZipInfo) -> str | None:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic links are not allowed; put the file itself in the ZIP"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a regular file (device, pipe or socket)"
    if info.flag_bits & _ENCRYPTED_FLAG:
        return "password-protected (encrypted) files are not allowed; zip it without a password"
    return None


def _screen(info: zipfile.ZipInfo) -> _Entry | None:
    """None for entries skipped silently (folders, OS junk)."""
    if info.is_dir() or _is_junk(info.filename):
        return None
    name = _decoded_name(info)
    if name is None:
        return _Entry(info, None, "file name is not valid UTF-8; rename it and zip it again")
    try:
        path = normalize_relative_path(name)
    except ValueError as exc:
        return _Entry(info, None, f"unsafe file name, skipped: {exc}")
    return _Entry(info, path, _type_problem(info))


def _strip_common_folder(entries: list[_Entry]) -> None:
    """A zipped folder (`myset/manifest.json`, `myset/a.svg`) is read as if zipped inside."""
    paths = [e.path for e in entries if e.path is not None]
    if not paths or any("/" not in p for p in paths):
        return
    top = {p.split("/", 1)[0] for p in paths}
    if len(top) != 1:
        return
    for entry in entries:
        if entry.path is not None:
            entry.path = entry.path.split("/", 1)[1]


# --- reading with hard caps ------------------------------------------------------------


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """At most cap + 1 bytes of the entry: one byte more than allowed proves it is too big."""
    chunks: list[bytes] = []
    total = 0
    with zf.open(info) as fh:
        while total <= cap:
            chunk = fh.read(min(_READ_CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    return b"".join(chunks)


def _read_problem(exc: Exception) -> str:
    if isinstance(exc, NotImplementedError):
        return "uses a ZIP compression method that is not supported; use ordinary (deflate) ZIP"
    if isinstance(exc, zipfile.BadZipFile) and "CRC" in str(exc):
        return "damaged in the ZIP: its data does not match its checksum (CRC error)"
    return "damaged in the ZIP and could not be unpacked; please zip it again"


_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    struct.error,
)


def _header_problem(info: zipfile.ZipInfo, limits: ArchiveLimits) -> str | None:
    """Refusals decided from the entry's header alone, before reading anything."""
    if info.filename.lower().endswith(_ARCHIVE_SUFFIXES):
        return "archives inside the ZIP are not allowed; put the files themselves in the ZIP"
    if info.file_size > limits.max_file_bytes:
        return (
            f"larger than the {_mib(limits.max_file_bytes)} limit for one file "
            f"({_mib(info.file_size)})"
        )
    if info.file_size >= limits.min_ratio_check_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            return (
                f"compresses suspiciously well (ratio {ratio:.0f}:1, limit "
                f"{limits.max_compression_ratio:.0f}:1), which is how zip bombs work"
            )
    return None


def _content_problem(info: zipfile.ZipInfo, data: bytes, limits: ArchiveLimits) -> str | None:
    if len(data) > limits.max_file_bytes:
        return f"unpacks to more than the {_mib(limits.max_file_bytes)} limit for one file"
    if len(data) > info.file_size:
        return "contains more data than its ZIP header declares; the ZIP is damaged or malicious"
    if data.startswith(_ARCHIVE_MAGIC):
        return "archives inside the ZIP are not allowed; put the files themselves in the ZIP"
    return None


class _Budget:
    """Running total of bytes actually unpacked, whatever the headers claim."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise ArchiveRejected(
                f"the ZIP unpacks to more than the {_mib(self.limit)} limit for a whole set"
            )


# --- the manifest ----------------------------------------------------------------------


def _find_manifest(entries: list[_Entry]) -> _Entry:
    found = [e for e in entries if e.path == MANIFEST_NAME]
    if len(found) > 1:
        raise ArchiveRejected("the ZIP contains manifest.json more than once; keep only one")
    if found:
        if found[0].problem is not None:
            raise ArchiveRejected(f"manifest.json cannot be used: {found[0].problem}")
        return found[0]
    hint = ""
    for entry in entries:
        if entry.shown_name.rsplit("/", 1)[-1].lower() == MANIFEST_NAME:
            hint = (
                f' (found "{entry.shown_name}"; it must be named exactly manifest.json and '
                "sit at the top of the ZIP, next to the SVG files)"
            )
            break
    raise ArchiveRejected(f"the ZIP has no manifest.json at its top level{hint}")


def _read_manifest(zf: zipfile.ZipFile, entry: _Entry, limits: ArchiveLimits) -> bytes:
    too_big = ArchiveRejected(
        f"manifest.json is larger than the {limits.max_manifest_bytes:,} bytes allowed"
    )
    if entry.info.file_size > limits.max_manifest_bytes:
        raise too_big
    try:
        data = _read_capped(zf, entry.info, limits.max_manifest_bytes)
    except _READ_ERRORS as exc:
        raise ArchiveRejected(f"manifest.json cannot be used: {_read_problem(exc)}") from None
    if len(data) > limits.max_manifest_bytes:
        raise too_big
    return data


# --- the whole extraction --------------------------------------------------------------


def _screen_all(zf: zipfile.ZipFile, limits: ArchiveLimits) -> list[_Entry]:
    infos = zf.infolist()
    if len(infos) > limits.max_entries:  # the end record can lie about the count
        raise _too_many_entries(len(infos), limits)
    entries = [entry for info in infos if (entry := _screen(info)) is not None]
    if not entries:
        raise ArchiveRejected("the ZIP is empty: it contains no files")
    _strip_common_folder(entries)
    return entries


def _mark_duplicates(entries: list[_Entry]) -> None:
    seen: set[str] = set()
    for entry in entries:
        if entry.path is None:
            continue
        if entry.path in seen and entry.problem is None:
            entry.problem = "appears more than once in the ZIP; only the first copy was used"
        seen.add(entry.path)


def _check_declared_total(entries: list[_Entry], limits: ArchiveLimits) -> None:
    # Entries refused anyway (unsafe, too big, ...) are never read, so they do not count:
    # one stray huge file is that file's problem, not the set's.
    declared = sum(
        e.info.file_size
        for e in entries
        if e.problem is None and e.info.file_size <= limits.max_file_bytes
    )
    if declared > limits.max_total_bytes:
        raise ArchiveRejected(
            f"the ZIP would unpack to {_mib(declared)}, more than the "
            f"{_mib(limits.max_total_bytes)} limit for a whole set"
        )


def _extract_entry(
    zf: zipfile.ZipFile, entry: _Entry, limits: ArchiveLimits, budget: _Budget
) -> bytes | str:
    """The entry's content, or the reason it is refused."""
    problem = entry.problem or _header_problem(entry.info, limits)
    if problem is not None:
        return problem
    try:
        data = _read_capped(zf, entry.info, limits.max_file_bytes)
    except _READ_ERRORS as exc:
        return _read_problem(exc)
    budget.spend(len(data))
    return _content_problem(entry.info, data, limits) or data


def extract_archive(
    source: str | os.PathLike[str] | IO[bytes], limits: ArchiveLimits
) -> ExtractedArchive:
    """Unpack an untrusted ZIP in memory; raise ArchiveRejected if the set is unusable."""
    with _open_zip(source, limits) as zf:
        entries = _screen_all(zf, limits)
        manifest_entry = _find_manifest(entries)
        _mark_duplicates(entries)
        _check_declared_total(entries, limits)
        budget = _Budget(limits.max_total_bytes)
        manifest = _read_manifest(zf, manifest_entry, limits)
        budget.spend(len(manifest))
        result = ExtractedArchive(manifest=manifest, files={}, problems=[])
        for entry in entries:
            if entry is manifest_entry:
                continue
            outcome = _extract_entry(zf, entry, limits, budget)
            if isinstance(outcome, str):
                result.problems.append(FileProblem(entry.shown_name, outcome))
            else:
                assert entry.path is not None  # entries without a path carry a problem
                result.files[entry.path] = outcome
        return result
