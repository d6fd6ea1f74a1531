"""Hostile uploads, built byte by byte: what real marketplaces receive."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.conftest import SAMPLE
from tests.integration.pipeline import make_zip

GOOD = {p.name: p.read_bytes() for p in sorted((SAMPLE / "mdi-essentials").glob("*.svg"))[:3]}
MiB = 2**20


def manifest(paths: list[str], **fields: object) -> bytes:
    body: dict[str, object] = {
        "product_type": "icon_set",
        "family": "hostile-tests",
        "title": "A set with something nasty in it",
        "tags": ["test"],
        "license": "standard",
        "files": [{"path": p, "title": p.rsplit(".", 1)[0]} for p in paths],
    }
    body.update(fields)
    return json.dumps(body).encode()


def with_good(extra: list[tuple[zipfile.ZipInfo | str, bytes]], listed: list[str]) -> bytes:
    """The good files plus `extra`; the manifest lists the good files plus `listed`."""
    good = list(GOOD.items())
    return make_zip([("manifest.json", manifest([*GOOD, *listed])), *good, *extra])


def info(name: str, **attributes: int) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    entry.compress_type = zipfile.ZIP_DEFLATED
    for key, value in attributes.items():
        setattr(entry, key, value)
    return entry


def zeros_entry(name: str, size: int) -> bytes:
    """A ZIP holding one entry of `size` zero bytes, streamed (it never sits in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open(info(name), "w", force_zip64=True) as entry:
            chunk = bytes(MiB)
            for _ in range(size // MiB):
                entry.write(chunk)
        archive.writestr("manifest.json", manifest([*GOOD, name]))
        for path, data in GOOD.items():
            archive.writestr(path, data)
    return buffer.getvalue()


def patch_entry(
    data: bytes, name: bytes, *, new_name: bytes | None = None, set_flags: int = 0, clear: int = 0
) -> bytes:
    """Rewrite one entry's name and general-purpose flags in both of its ZIP headers."""
    raw = bytearray(data)
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (start := raw.find(signature, start)) != -1:
            at = start + name_offset
            if raw[at : at + len(name)] == name:
                flags = int.from_bytes(raw[start + flag_offset : start + flag_offset + 2], "little")
                flags = (flags | set_flags) & ~clear
                raw[start + flag_offset : start + flag_offset + 2] = flags.to_bytes(2, "little")
                if new_name is not None:
                    assert len(new_name) == len(name)
                    raw[at : at + len(name)] = new_name
            start += 4
    return bytes(raw)


def encrypted_entry() -> bytes:
    data = with_good([("secret.svg", GOOD[next(iter(GOOD))])], ["secret.svg"])
    return patch_entry(data, b"secret.svg", set_flags=0x1)  # bit 0: encrypted


def non_utf8_name() -> bytes:
    name = "caf\u0398_.svg"  # written as UTF-8 (10 bytes), then made Latin-1 garbage
    data = with_good([(name, GOOD[next(iter(GOOD))] + b" ")], [])
    return patch_entry(data, name.encode(), new_name=b"caf\xe9\xe9_.svg", clear=0x800)


def svg(text: str) -> bytes:
    return text.encode()


DEEP = "<g>" * 10_000 + "</g>" * 10_000
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    '<svg xmlns="http://www.w3.org/2000/svg"><text>&d;</text></svg>'
)
XXE = (
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text></svg>'
)
NS = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n" + bytes(64)


@dataclass(frozen=True)
class Case:
    """One hostile upload and the reason it must end with."""

    name: str
    build: Callable[[], bytes]
    where: str  # "upload" (the whole set refused), "file" (batcher) or "image" (processor)
    path: str | None  # the refused file, for "file" and "image"
    reason: tuple[str, ...]  # words the contributor must read (any one of them)
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def good_survive(self) -> bool:
        return self.where != "upload"


def bad_svg(name: str, data: bytes, reason: tuple[str, ...], where: str = "file") -> Case:
    path = f"{name}.svg"
    return Case(f"svg: {name}", lambda: with_good([(path, data)], [path]), where, path, reason)


CASES: list[Case] = [
    # --- archives ------------------------------------------------------------------
    Case(
        "zip: compression-ratio bomb",
        lambda: zeros_entry("bomb.svg", 4 * MiB),
        "file",
        "bomb.svg",
        ("ratio", "compress"),
    ),
    Case(
        "zip: absolute-size bomb",
        lambda: with_good(
            [(f"big{i}.svg", os.urandom(3 * MiB)) for i in range(4)],
            [f"big{i}.svg" for i in range(4)],
        ),
        "upload",
        None,
        ("MiB", "large", "size"),
        {"max_total_bytes": 8 * MiB},
    ),
    Case(
        "zip: entry larger than a file may be",
        lambda: zeros_entry("huge.svg", 64 * MiB),
        "file",
        "huge.svg",
        ("MiB", "large", "limit"),
    ),
    Case(
        "zip: entry-count bomb",
        lambda: make_zip(
            [
                ("manifest.json", manifest(list(GOOD))),
                *GOOD.items(),
                *((f"x{i}.txt", b"") for i in range(2100)),
            ]
        ),
        "upload",
        None,
        ("entries", "files"),
    ),
    Case(
        "zip: nested ZIP",
        lambda: with_good([("inner.zip", make_zip(GOOD))], []),
        "file",
        "inner.zip",
        ("archive", "ZIP", "nested"),
    ),
    Case(
        "zip: path traversal ../",
        lambda: with_good([("../evil.svg", GOOD[next(iter(GOOD))])], []),
        "file",
        "../evil.svg",
        ("outside", "path", ".."),
    ),
    Case(
        "zip: absolute path",
        lambda: with_good([("/etc/evil.svg", GOOD[next(iter(GOOD))])], []),
        "file",
        "/etc/evil.svg",
        ("absolute", "path"),
    ),
    Case(
        "zip: backslashes",
        lambda: with_good([("..\\evil.svg", GOOD[next(iter(GOOD))])], []),
        "file",
        "..\\evil.svg",
        ("backslash",),
    ),
    Case(
        "zip: drive letter",
        lambda: with_good([("C:/evil.svg", GOOD[next(iter(GOOD))])], []),
        "file",
        "C:/evil.svg",
        ("drive",),
    ),
    Case(
        "zip: symlink entry",
        lambda: with_good(
            [(info("link.svg", external_attr=0o120777 << 16), b"/etc/passwd")], ["link.svg"]
        ),
        "file",
        "link.svg",
        ("link",),
    ),
    Case(
        "zip: duplicate names",
        lambda: with_good([(next(iter(GOOD)), GOOD[next(iter(GOOD))] + b" ")], []),
        "file",
        next(iter(GOOD)),
        ("twice", "duplicate", "more than once"),
    ),
    Case("zip: non-UTF-8 name", non_utf8_name, "file", None, ("UTF-8",)),
    Case("zip: encrypted entry", encrypted_entry, "file", "secret.svg", ("encrypt", "password")),
    Case(
        "zip: truncated archive",
        lambda: with_good([], [])[:-300],
        "upload",
        None,
        ("ZIP", "damaged", "truncated", "incomplete"),
    ),
    Case(
        "zip: corrupt archive",
        lambda: b"PK\x03\x04" + os.urandom(2000),
        "upload",
        None,
        ("ZIP", "damaged", "not a ZIP"),
    ),
    Case("zip: empty archive", lambda: make_zip([]), "upload", None, ("empty",)),
    Case("zip: zero-byte upload", lambda: b"", "upload", None, ("empty", "ZIP")),
    Case("zip: no manifest", lambda: make_zip(GOOD), "upload", None, ("manifest.json",)),
    Case(
        "manifest: wrong types",
        lambda: make_zip(
            [("manifest.json", manifest(list(GOOD), title=12, tags="x")), *GOOD.items()]
        ),
        "upload",
        None,
        ("title",),
    ),
    Case(
        "manifest: unknown fields",
        lambda: make_zip([("manifest.json", manifest(list(GOOD), colour="red")), *GOOD.items()]),
        "upload",
        None,
        ("colour",),
    ),
    Case(
        "manifest: over-long strings",
        lambda: make_zip(
            [("manifest.json", manifest(list(GOOD), title="x" * 5000)), *GOOD.items()]
        ),
        "upload",
        None,
        ("title", "long"),
    ),
    Case(
        "manifest: not JSON",
        lambda: make_zip([("manifest.json", b"{not json"), *GOOD.items()]),
        "upload",
        None,
        ("JSON",),
    ),
    Case(
        "manifest: lists an absent file",
        lambda: with_good([], ["ghost.svg"]),
        "file",
        "ghost.svg",
        ("not in the ZIP",),
    ),
    Case(
        "manifest: a file it does not list",
        lambda: with_good([("stowaway.svg", GOOD[next(iter(GOOD))] + b"\n")], []),
        "file",
        "stowaway.svg",
        ("not listed",),
    ),
    # --- SVGs ----------------------------------------------------------------------
    bad_svg("png-renamed", PNG_MAGIC, ("PNG",)),
    bad_svg("html-renamed", b"<!DOCTYPE html><html><body>hi</body></html>", ("HTML",)),
    bad_svg(
        "truncated", svg(f'<svg {NS} viewBox="0 0 24 24"><path d="M0 0L24'), ("well-formed", "XML")
    ),
    bad_svg("zero-bytes", b"", ("empty",)),
    bad_svg(
        "huge-declared",
        svg(f'<svg {NS} width="100000" height="100000"><rect width="9" height="9"/></svg>'),
        ("100000",),
        "image",
    ),
    bad_svg(
        "giant-viewbox",
        svg(f'<svg {NS} viewBox="0 0 1000000 1000000"><rect width="9" height="9"/></svg>'),
        ("1000000",),
        "image",
    ),
    bad_svg("billion-laughs", svg(LAUGHS), ("entit", "DOCTYPE")),
    bad_svg("xxe", svg(XXE), ("entit", "DOCTYPE")),
    bad_svg(
        "local-file-image",
        svg(
            f'<svg {NS} width="24" height="24"><image href="file:///etc/passwd" width="24" height="24"/></svg>'
        ),
        ("external", "refers"),
    ),
    bad_svg(
        "remote-image",
        svg(
            f'<svg {NS} width="24" height="24"><image xlink:href="http://127.0.0.1:9/x.png" width="24" height="24"/></svg>'
        ),
        ("external", "refers"),
    ),
    bad_svg(
        "script",
        svg(f'<svg {NS} width="24" height="24"><script>alert(1)</script></svg>'),
        ("script",),
    ),
    bad_svg(
        "foreign-object",
        svg(f'<svg {NS} width="24" height="24"><foreignObject><p>x</p></foreignObject></svg>'),
        ("foreignObject",),
    ),
    Case(
        "svg: deep-nesting",
        lambda: with_good(
            [
                (
                    info("deep.svg", compress_type=zipfile.ZIP_STORED),
                    svg(f'<svg {NS} width="24" height="24">{DEEP}</svg>'),
                )
            ],
            ["deep.svg"],
        ),
        "file",
        "deep.svg",
        ("deep", "nest"),
    ),
    bad_svg(
        "over-size-limit",
        svg(f'<svg {NS} width="24" height="24"><!--{"x" * (6 * MiB)}--></svg>'),
        ("MiB", "limit", "large"),
    ),
]
