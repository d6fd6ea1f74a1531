"""container.id on the resource: opentelemetry-resource-detector-containerid reads the
cgroup files; only a container runtime's id is kept (ingest_common.telemetry.resource).

The detector's paths are module constants: the tests point them at files of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ingest_common.telemetry.resource import build_resource, container_id
from opentelemetry.resource.detector import containerid

CID = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


@pytest.fixture
def cgroup_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cgroup, mountinfo = tmp_path / "cgroup", tmp_path / "mountinfo"
    monkeypatch.setattr(containerid, "_DEFAULT_CGROUP_V1_PATH", str(cgroup))
    monkeypatch.setattr(containerid, "_DEFAULT_CGROUP_V2_PATH", str(mountinfo))
    return cgroup, mountinfo


def test_docker_on_cgroup_v1(cgroup_files: tuple[Path, Path]) -> None:
    cgroup, _ = cgroup_files
    cgroup.write_text(f"12:cpu:/docker/{CID}\n11:memory:/docker/{CID}\n")
    assert container_id() == CID
    assert build_resource("processor").attributes["container.id"] == CID


def test_docker_on_cgroup_v2(cgroup_files: tuple[Path, Path]) -> None:
    cgroup, mountinfo = cgroup_files
    cgroup.write_text("0::/\n")
    mountinfo.write_text(
        f"1 2 0:3 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 rw\n"
    )
    assert container_id() == CID


@pytest.mark.parametrize(
    "line",
    [
        "0::/",  # a host, or a container of cgroup v2 whose mounts do not name it
        "0::/user.slice/user-1000.slice/session-3.scope",  # the detector would say "3"
        "4:memory:/process_api/dec855f1f3ab5b64e615c7dd2de3b17e",  # a sandbox's cgroup
    ],
)
def test_no_container_no_id(cgroup_files: tuple[Path, Path], line: str) -> None:
    cgroup, mountinfo = cgroup_files
    cgroup.write_text(line + "\n")
    mountinfo.write_text("22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n")
    assert container_id() is None
    assert "container.id" not in build_resource("processor").attributes


def test_unreadable_files_give_no_id(cgroup_files: tuple[Path, Path]) -> None:
    # Neither file exists (not Linux); a directory cannot be read as one.
    assert container_id() is None
    cgroup, _ = cgroup_files
    cgroup.mkdir()
    assert container_id() is None
