"""extract_archive against hostile ZIPs, each built here with the stdlib `zipfile`."""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from ingest_batcher.archive import (
    ArchiveLimits,
    ArchiveRejected,
    ExtractedArchive,
    FileProblem,
    extract_archive,
)
from ingest_cli.zipping import zip_folder

from tests.svgs import BOOTSTRAP_CARET_UP_FILL, MDI_ALPHA_M

MiB = 1024 * 1024


MANIFEST = json.dumps(
    {
        "product_type": "icon_set",
        "family": "letters",
        "title": "Letters",
        "license": "apache-2.0",
        "files": [{"path": "m.svg", "title": "M"}, {"path": "caret.svg", "title": "Caret"}],
    }
).encode()

Entry = tuple[str | zipfile.ZipInfo, bytes]


# --- building hostile ZIPs ---------------------------------------------------------------


def build_zip(entries: Sequence[Entry], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
            for name, data in entries:
                if isinstance(name, zipfile.ZipInfo):
                    zf.writestr(name, data, compress_type=compression)
                else:
                    zf.writestr(name, data)
    return buffer.getvalue()


def good_entries() -> list[Entry]:
    return [
        ("manifest.json", MANIFEST),
        ("m.svg", MDI_ALPHA_M),
        ("caret.svg", BOOTSTRAP_CARET_UP_FILL),
    ]


def records(data: bytes) -> Iterator[tuple[int, int, str]]:
    """(local header offset, central record offset, name) of every entry."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        at = zf.start_dir
        for info in zf.infolist():
            name_len, extra_len, comment_len = struct.unpack_from("<3H", data, at + 28)
            yield info.header_offset, at, info.filename
            at += 46 + name_len + extra_len + comment_len


def patch(data: bytes, name: str, local_at: int, central_at: int, fmt: str, value: int) -> bytes:
    """Rewrite one header field of entry `name` in both its local and central header."""
    out = bytearray(data)
    for local, central, entry in records(data):
        if entry == name:
            struct.pack_into(fmt, out, local + local_at, value)
            struct.pack_into(fmt, out, central + central_at, value)
    return bytes(out)


def set_flag(data: bytes, name: str, bit: int) -> bytes:
    # zipfile rewrites flag_bits when writing, so the flag is patched in afterwards.
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        flags = zf.getinfo(name).flag_bits
    return patch(data, name, 6, 8, "<H", flags | bit)


def extract(data: bytes, limits: ArchiveLimits | None = None) -> ExtractedArchive:
    return extract_archive(io.BytesIO(data), limits or ArchiveLimits())


def rejected(data: bytes, limits: ArchiveLimits | None = None) -> str:
    with pytest.raises(ArchiveRejected) as caught:
        extract(data, limits)
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


def reasons(archive: ExtractedArchive) -> dict[str, str]:
    return {p.path: p.reason for p in archive.problems}


# --- the happy path ---------------------------------------------------------------------


def test_plain_set() -> None:
    archive = extract(build_zip(good_entries()))
    assert archive.manifest == MANIFEST
    assert archive.files == {"m.svg": MDI_ALPHA_M, "caret.svg": BOOTSTRAP_CARET_UP_FILL}
    assert archive.problems == []


def test_sources_path_stream_and_unseekable(tmp_path: Path) -> None:
    data = build_zip(good_entries())
    target = tmp_path / "set.zip"
    target.write_bytes(data)

    class Unseekable(io.BytesIO):
        def seekable(self) -> bool:
            return False

    for source in (str(target), target, io.BytesIO(data), Unseekable(data)):
        assert set(extract_archive(source, ArchiveLimits()).files) == {"m.svg", "caret.svg"}


def test_zipped_folder_is_unwrapped_and_os_junk_skipped() -> None:
    data = build_zip(
        [
            ("myset/", b""),
            ("myset/manifest.json", MANIFEST),
            ("myset/m.svg", MDI_ALPHA_M),
            ("myset/icons/caret.svg", BOOTSTRAP_CARET_UP_FILL),
            ("myset/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("myset/icons/._caret.svg", b"\x00\x05\x16\x07"),
            ("__MACOSX/myset/._m.svg", b"\x00\x05\x16\x07"),
            ("Thumbs.db", b"junk"),
        ]
    )
    archive = extract(data)
    assert archive.manifest == MANIFEST
    assert set(archive.files) == {"m.svg", "icons/caret.svg"}
    assert archive.problems == []


def test_folders_are_kept_when_not_everything_is_in_one() -> None:
    data = build_zip([("manifest.json", MANIFEST), ("icons/m.svg", MDI_ALPHA_M)])
    assert set(extract(data).files) == {"icons/m.svg"}


def test_companion_files_are_extracted_too() -> None:
    archive = extract(build_zip([*good_entries(), ("LICENSE", b"MIT")]))
    assert archive.files["LICENSE"] == b"MIT"


# --- the whole set is rejected ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is a text file, not a zip",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        build_zip(good_entries())[:200],  # truncated upload
        build_zip(good_entries())[:-10],  # end record cut short
    ],
    ids=["empty-bytes", "text", "png", "truncated", "cut-end-record"],
)
def test_not_a_zip(data: bytes) -> None:
    assert "not a ZIP file, or it is damaged or incomplete" in rejected(data)


def test_corrupt_central_directory() -> None:
    data = bytearray(build_zip(good_entries()))
    _, central, _ = next(records(bytes(data)))
    data[central : central + 4] = b"XXXX"
    assert "damaged or incomplete" in rejected(bytes(data))


def test_empty_zip() -> None:
    assert "the ZIP is empty" in rejected(build_zip([]))
    assert "the ZIP is empty" in rejected(build_zip([("a/", b""), ("a/b/", b"")]))
    assert "the ZIP is empty" in rejected(build_zip([("__MACOSX/._x", b""), (".DS_Store", b"")]))


def test_archive_too_large() -> None:
    data = build_zip(good_entries())
    reason = rejected(data, ArchiveLimits(max_archive_bytes=len(data) - 1))
    assert "larger than the" in reason
    assert "limit" in reason


def test_entry_count_bomb() -> None:
    data = build_zip([("manifest.json", MANIFEST)] + [(f"{i}.svg", b"") for i in range(2100)])
    assert "more than the limit of 2000" in rejected(data)


def test_entry_count_bomb_with_a_lying_end_record() -> None:
    data = bytearray(build_zip([("manifest.json", MANIFEST)] + [(f"{i}", b"") for i in range(30)]))
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 3, 3)  # claims 3 entries; the directory has 31
    assert "31 entries, more than the limit of 10" in rejected(
        bytes(data), ArchiveLimits(max_entries=10)
    )


def test_declared_total_size_bomb() -> None:
    entries = [("manifest.json", MANIFEST)] + [(f"{i}.svg", b"x" * 600) for i in range(3)]
    limits = ArchiveLimits(max_file_bytes=1000, max_total_bytes=1500)
    assert "would unpack to" in rejected(build_zip(entries), limits)


def test_one_oversized_file_does_not_count_towards_the_total() -> None:
    entries = [("manifest.json", MANIFEST), ("ok.svg", b"x" * 600), ("big.svg", b"y" * 5000)]
    limits = ArchiveLimits(max_file_bytes=1000, max_total_bytes=1500)
    archive = extract(build_zip(entries), limits)
    assert set(archive.files) == {"ok.svg"}
    assert "larger than the" in reasons(archive)["big.svg"]


def test_no_manifest() -> None:
    reason = rejected(build_zip([("m.svg", MDI_ALPHA_M), ("caret.svg", MDI_ALPHA_M)]))
    assert reason == "the ZIP has no manifest.json at its top level"


@pytest.mark.parametrize("name", ["Manifest.JSON", "docs/manifest.json"])
def test_misplaced_manifest_gets_a_hint(name: str) -> None:
    reason = rejected(build_zip([(name, MANIFEST), ("m.svg", MDI_ALPHA_M)]))
    assert "no manifest.json" in reason
    assert f'found "{name}"' in reason


def test_manifest_twice() -> None:
    data = build_zip([("manifest.json", MANIFEST), *good_entries()])
    assert "manifest.json more than once" in rejected(data)


def test_manifest_too_large() -> None:
    data = build_zip(good_entries())
    assert "manifest.json is larger than" in rejected(data, ArchiveLimits(max_manifest_bytes=100))


def test_encrypted_manifest() -> None:
    data = set_flag(build_zip(good_entries()), "manifest.json", 0x1)
    reason = rejected(data)
    assert reason.startswith("manifest.json cannot be used")
    assert "password-protected" in reason


def test_symlinked_manifest() -> None:
    link = zipfile.ZipInfo("manifest.json")
    link.external_attr = 0o120777 << 16
    reason = rejected(build_zip([(link, b"/etc/passwd"), ("m.svg", MDI_ALPHA_M)]))
    assert "symbolic links are not allowed" in reason


def test_damaged_manifest() -> None:
    data = build_zip(good_entries(), compression=zipfile.ZIP_STORED)
    at = data.index(b'"family"')
    data = data[:at] + b"X" + data[at + 1 :]
    reason = rejected(data)
    assert "manifest.json cannot be used" in reason
    assert "CRC" in reason


# --- one file refused, the rest goes on -------------------------------------------------


def assert_rest_survives(archive: ExtractedArchive) -> None:
    assert archive.files["m.svg"] == MDI_ALPHA_M
    assert archive.files["caret.svg"] == BOOTSTRAP_CARET_UP_FILL


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("../evil.svg", '".."'),
        ("icons/../../evil.svg", '".."'),
        ("/etc/evil.svg", "absolute path"),
        ("icons\\evil.svg", "backslash"),
        ("..\\..\\evil.svg", "backslash"),
        ("C:/evil.svg", "drive letter"),
    ],
)
def test_path_traversal(name: str, words: str) -> None:
    archive = extract(build_zip([*good_entries(), (zipfile.ZipInfo(name), MDI_ALPHA_M)]))
    [problem] = archive.problems
    assert problem.path == name
    assert problem.reason.startswith("unsafe file name")
    assert words in problem.reason
    assert len(archive.files) == 2
    assert_rest_survives(archive)


def test_symlink_entry() -> None:
    link = zipfile.ZipInfo("passwd.svg")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    archive = extract(build_zip([*good_entries(), (link, b"/etc/passwd")]))
    assert archive.problems == [
        FileProblem("passwd.svg", "symbolic links are not allowed; put the file itself in the ZIP")
    ]
    assert_rest_survives(archive)


def test_encrypted_entry() -> None:
    data = set_flag(
        build_zip([*good_entries(), ("secret.svg", MDI_ALPHA_M + b" ")]), "secret.svg", 1
    )
    archive = extract(data)
    assert "password-protected" in reasons(archive)["secret.svg"]
    assert_rest_survives(archive)


def test_name_that_is_not_utf8() -> None:
    # "café.svg" in the DOS code page, without the UTF-8 flag (old Windows zip tools).
    data = build_zip([*good_entries(), ("cafX.svg", MDI_ALPHA_M)])
    data = data.replace(b"cafX.svg", b"caf\x82.svg")
    archive = extract(data)
    [problem] = archive.problems
    assert "file name is not valid UTF-8" in problem.reason
    assert_rest_survives(archive)


def test_utf8_name_without_the_flag_is_recovered() -> None:
    # Info-ZIP and old 7-Zip write UTF-8 bytes but leave the UTF-8 flag unset.
    data = build_zip([*good_entries(), ("cafXY.svg", MDI_ALPHA_M + b"\n")])
    data = data.replace(b"cafXY.svg", "café.svg".encode())
    archive = extract(data)
    assert archive.problems == []
    assert "café.svg" in archive.files


def test_duplicate_names_keep_the_first() -> None:
    archive = extract(build_zip([*good_entries(), ("m.svg", b"<svg>second</svg>")]))
    assert archive.files["m.svg"] == MDI_ALPHA_M
    assert reasons(archive) == {
        "m.svg": "appears more than once in the ZIP; only the first copy was used"
    }


def test_duplicate_after_normalization() -> None:
    archive = extract(build_zip([*good_entries(), ("./m.svg", b"<svg>second</svg>")]))
    assert "more than once" in reasons(archive)["m.svg"]
    assert archive.files["m.svg"] == MDI_ALPHA_M


# Named by the file alone: the inner ZIP's bytes hold the time it was built, and xdist's
# workers, collecting seconds apart, must agree on every test's ID.
NESTED = [
    ("more.zip", b"anything"),
    ("more.tar.gz", b"anything"),
    ("more.7z", b"anything"),
    ("inner.svg", build_zip([("x.svg", MDI_ALPHA_M)])),
    ("gzipped.svg", b"\x1f\x8b\x08\x00" + b"\x00" * 20),
]


@pytest.mark.parametrize(("name", "content"), NESTED, ids=[name for name, _ in NESTED])
def test_nested_archives(name: str, content: bytes) -> None:
    archive = extract(build_zip([*good_entries(), (name, content)]))
    assert "archives inside the ZIP are not allowed" in reasons(archive)[name]
    assert_rest_survives(archive)


def test_file_over_the_size_limit() -> None:
    archive = extract(build_zip([*good_entries(), ("huge.svg", b"a" * (6 * MiB))]))
    assert "larger than the 5.0 MiB limit for one file (6.0 MiB)" in reasons(archive)["huge.svg"]
    assert_rest_survives(archive)


def test_ratio_bomb() -> None:
    bomb = bytes(50 * 1000 * 1000)  # 50 MB of zeros deflate to about 50 KB
    data = build_zip([*good_entries(), ("bomb.svg", bomb)])
    limits = ArchiveLimits(max_file_bytes=64 * MiB)
    archive = extract(data, limits)
    reason = reasons(archive)["bomb.svg"]
    assert "compresses suspiciously well" in reason
    assert "limit 100:1" in reason
    assert_rest_survives(archive)
    # With the default limits the same entry is simply too big.
    assert "larger than the" in reasons(extract(data))["bomb.svg"]


def test_small_repetitive_files_are_not_ratio_bombs() -> None:
    archive = extract(build_zip([*good_entries(), ("flat.svg", b" " * 20_000)]))
    assert archive.problems == []
    assert archive.files["flat.svg"] == b" " * 20_000


def test_header_understating_the_size() -> None:
    # The header says 10 bytes; the data is 1000. zipfile never returns more than declared,
    # and the checksum of the cut data does not match: the file is refused, not trusted.
    data = build_zip([*good_entries(), ("liar.svg", b"z" * 1000)])
    archive = extract(patch(data, "liar.svg", 22, 24, "<L", 10))
    assert "damaged in the ZIP" in reasons(archive)["liar.svg"]
    assert "liar.svg" not in archive.files
    assert_rest_survives(archive)


def test_crc_error_in_one_entry() -> None:
    payload = b"<svg xmlns='http://www.w3.org/2000/svg'><!-- unique --></svg>"
    data = build_zip([*good_entries(), ("bad.svg", payload)], compression=zipfile.ZIP_STORED)
    data = data.replace(b"unique", b"UNIQUE")
    archive = extract(data)
    assert "CRC error" in reasons(archive)["bad.svg"]
    assert_rest_survives(archive)


def test_unsupported_compression_method() -> None:
    data = build_zip([*good_entries(), ("odd.svg", MDI_ALPHA_M + b" ")])
    archive = extract(patch(data, "odd.svg", 8, 10, "<H", 99))
    assert "compression method that is not supported" in reasons(archive)["odd.svg"]
    assert_rest_survives(archive)


def test_problem_paths_are_relative_to_an_unwrapped_folder() -> None:
    link = zipfile.ZipInfo("myset/link.svg")
    link.external_attr = 0o120777 << 16
    entries = [(f"myset/{name}", data) for name, data in good_entries()]
    archive = extract(build_zip([*entries, (link, b"/etc/passwd")]))
    assert set(reasons(archive)) == {"link.svg"}
    assert_rest_survives(archive)


def test_many_bad_entries_do_not_block_the_good_ones() -> None:
    link = zipfile.ZipInfo("link.svg")
    link.external_attr = 0o120777 << 16
    bad: list[Entry] = [
        (zipfile.ZipInfo("../a.svg"), b"x"),
        (link, b"/etc/passwd"),
        ("nested.zip", b"PK"),
        ("big.svg", b"b" * 3000),
        ("m.svg", b"dup"),
    ]
    archive = extract(build_zip([*good_entries(), *bad]), ArchiveLimits(max_file_bytes=2000))
    assert set(reasons(archive)) == {"../a.svg", "link.svg", "nested.zip", "big.svg", "m.svg"}
    assert_rest_survives(archive)


# --- zip_folder (the CLI's upload) ------------------------------------------------------


def test_zip_folder_round_trip(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_bytes(MANIFEST)
    (tmp_path / "m.svg").write_bytes(MDI_ALPHA_M)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "Caret.SVG").write_bytes(BOOTSTRAP_CARET_UP_FILL)
    (tmp_path / "LICENSE").write_text("Apache-2.0")
    (tmp_path / "notes.txt").write_text("not shipped")
    (tmp_path / ".hidden.svg").write_bytes(MDI_ALPHA_M)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.svg").write_bytes(MDI_ALPHA_M)
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("private key")
    os.symlink(secret, tmp_path / "link.svg")  # must never be followed into the upload

    data = zip_folder(tmp_path)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["LICENSE", "m.svg", "manifest.json", "sub/Caret.SVG"]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
    assert zip_folder(tmp_path) == data  # reproducible
    archive = extract(data)
    assert archive.manifest == MANIFEST
    assert archive.files["sub/Caret.SVG"] == BOOTSTRAP_CARET_UP_FILL
    assert archive.problems == []


def test_zip_folder_needs_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.svg").write_bytes(MDI_ALPHA_M)
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        zip_folder(tmp_path)
