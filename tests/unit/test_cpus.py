"""available_cpus: the CPUs a process may run on, within its cgroup's CPU quota."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from ingest_common.cpus import available_cpus, cpu_quota
from ingest_processor.settings import IN_FLIGHT_PER_WORKER

AFFINITY = len(os.sched_getaffinity(0))


def _tree(tmp_path: Path, proc: str, files: dict[str, str]) -> dict[str, Path]:
    """A /proc/self/cgroup of ``proc`` and a cgroup file system holding ``files``."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "proc-cgroup").write_text(proc)
    return {"proc_cgroup": tmp_path / "proc-cgroup", "cgroup_root": root}


def test_v2_the_smallest_quota_along_the_path_counts(tmp_path: Path) -> None:
    paths = _tree(
        tmp_path,
        "0::/system.slice/ingest.service\n",
        {
            "cpu.max": "max 100000\n",
            "system.slice/cpu.max": "150000 100000\n",  # the parent's 1.5 CPUs bind the child
            "system.slice/ingest.service/cpu.max": "400000 100000\n",
        },
    )
    assert cpu_quota(**paths) == 1.5
    assert available_cpus(**paths) == min(AFFINITY, 2)  # rounded up


def test_v1_in_a_container_reads_the_mount_root_when_the_hosts_path_is_not_there(
    tmp_path: Path,
) -> None:
    paths = _tree(
        tmp_path,
        "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n2:cpuacct:/docker/abc\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "100000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
    )
    assert cpu_quota(**paths) == 1.0
    assert available_cpus(**paths) == 1


def test_a_fraction_of_a_cpu_still_gets_one(tmp_path: Path) -> None:
    paths = _tree(tmp_path, "0::/\n", {"cpu.max": "10000 100000\n"})
    assert cpu_quota(**paths) == 0.1
    assert available_cpus(**paths) == 1


@pytest.mark.parametrize(
    ("proc", "files"),
    [
        ("0::/\n", {"cpu.max": "max 100000\n"}),  # v2, no limit
        ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}),
        ("0::/\n", {}),  # no cpu controller files (hybrid: cpu lives in v1)
        ("3:cpuset:/\n2:cpuacct:/\n", {"cpuacct/cpu.cfs_quota_us": "100000\n"}),  # not cpu's
        ("0::/\n", {"cpu.max": "garbage\n"}),
        ("\nnot a cgroup line\n", {"cpu.max": "100000 100000\n"}),
    ],
)
def test_no_quota_leaves_the_affinity(tmp_path: Path, proc: str, files: dict[str, str]) -> None:
    paths = _tree(tmp_path, proc, files)
    assert cpu_quota(**paths) is None
    assert available_cpus(**paths) == AFFINITY


def test_no_cgroup_file_leaves_the_affinity(tmp_path: Path) -> None:
    missing = {"proc_cgroup": tmp_path / "absent", "cgroup_root": tmp_path}
    assert cpu_quota(**missing) is None
    assert available_cpus(**missing) == AFFINITY


def _cpu_cgroup_we_can_make() -> tuple[Path, str] | None:
    """A writable cpu controller on this machine (root): (its folder, the quota file's kind)."""
    v2 = Path("/sys/fs/cgroup")
    if (v2 / "cgroup.controllers").is_file() and "cpu" in (
        v2 / "cgroup.subtree_control"
    ).read_text().split():
        return v2, "v2"
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.cfs_quota_us").is_file():
        return v1, "v1"
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root")
def test_a_processor_in_a_one_cpu_cgroup_starts_one_render_worker() -> None:
    """The real kernel: a child process moved into a cgroup limited to one CPU's time sees
    its affinity's CPUs, and sizes its render workers (and images in flight) to one."""
    found = _cpu_cgroup_we_can_make()
    if found is None:
        pytest.skip("no cpu cgroup controller to make a group in")
    mount, kind = found
    group = mount / f"ingest-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    try:
        if kind == "v2":
            (group / "cpu.max").write_text("100000 100000")
        else:
            (group / "cpu.cfs_quota_us").write_text("100000")
        script = (
            "from ingest_common.cpus import available_cpus;"
            "from ingest_processor.settings import ProcessorSettings;"
            "s = ProcessorSettings(database_url='postgresql://x/y');"
            "print(available_cpus(), s.render_workers, s.concurrency)"
        )
        shown = subprocess.run(
            ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"', sys.executable,
             script],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()  # fmt: skip
    finally:
        group.rmdir()
    assert shown == ["1", "1", str(IN_FLIGHT_PER_WORKER)]  # images in flight follow the one
