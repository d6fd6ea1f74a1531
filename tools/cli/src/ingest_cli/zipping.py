"""Build the ZIP of a set folder, the way `ingest upload` sends it.

Only manifest.json, the SVGs and the LICENSE go in; symlinks are never followed (a link
named x.svg to a private file must not be uploaded), and the same folder always gives
the same bytes.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

MANIFEST_NAME = "manifest.json"

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # same folder -> same bytes (reproducible uploads)
_LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md")


def _svg_files(folder: Path) -> list[Path]:
    found: list[Path] = []
    # os.walk does not follow symlinked folders; symlinked files are skipped below, so a
    # link to ~/.ssh/id_rsa named x.svg is never uploaded.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(files):
            path = Path(root) / name
            if name.lower().endswith(".svg") and not name.startswith(".") and _is_plain(path):
                found.append(path)
    return found


def _is_plain(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def zip_folder(folder: Path) -> bytes:
    """A deflated ZIP of a set folder: manifest.json, every *.svg below it, and LICENSE."""
    manifest = folder / MANIFEST_NAME
    if not _is_plain(manifest):
        raise FileNotFoundError(f"{manifest} not found: a set folder needs a manifest.json")
    licenses = [folder / n for n in _LICENSE_NAMES if _is_plain(folder / n)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in [manifest, *_svg_files(folder), *licenses]:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=_FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, path.read_bytes())
    return buffer.getvalue()
