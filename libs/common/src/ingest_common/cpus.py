"""How many CPUs this process can use: the CPUs it may run on, capped by its cgroup's quota.

`os.sched_getaffinity` counts the CPUs a process may run on, not how much of their time it
may have: a container given two CPUs' worth of time (`docker run --cpus 2`, a Kubernetes CPU
limit, an ECS container's `cpu` as a hard limit) on a 16-CPU host still sees 16. A processor
sized by that starts 16 render workers that share two CPUs' time: every render eight times
slower in wall time, eight times the memory, and the throttling on top.

The quota is read as the kernel enforces it: cgroup v2's `cpu.max` or v1's
`cpu.cfs_quota_us` / `cpu.cfs_period_us`, the smallest along the process's cgroup and its
ancestors, rounded up (1.5 CPUs' worth: two workers, each of them busy three quarters of the
time, rather than one that leaves half a CPU unused).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(*, proc_cgroup: Path = PROC_CGROUP, cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on, at most its cgroup's CPU quota (rounded up); ≥ 1."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(proc_cgroup=proc_cgroup, cgroup_root=cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cpu_quota(*, proc_cgroup: Path = PROC_CGROUP, cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """This process's CPU quota in CPUs (2.0: two CPUs' worth of time per period), or None
    where none is set or none can be read (not Linux, no cgroup file system)."""
    quotas: list[float] = []
    for group in cpu_cgroups(proc_cgroup=proc_cgroup, cgroup_root=cgroup_root):
        quotas += _along(group, _v1_quota if group.v1 else _v2_quota)
    return min(quotas, default=None)


@dataclass(frozen=True)
class CpuCgroup:
    """This process's cgroup in a hierarchy that may limit its CPU time."""

    mount: Path  # the hierarchy's root as mounted here: the top of what can be read
    folder: Path  # the process's cgroup in it
    v1: bool  # cgroup v1's cpu controller (else the v2 hierarchy)


def cpu_cgroups(
    *, proc_cgroup: Path = PROC_CGROUP, cgroup_root: Path = CGROUP_ROOT
) -> list[CpuCgroup]:
    """This process's cgroups that may limit its CPU time: v2's, and v1's cpu controller's
    (none where /proc says nothing). In a container, the mount's root is often the container's
    own cgroup while /proc still names it from the host's root: then the path is not found,
    and the mount's root is the process's cgroup."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    groups = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue  # not a hierarchy line: nothing to read there
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one hierarchy
            mount, v1 = cgroup_root, False
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's hierarchy
            mount, v1 = cgroup_root / controllers, True
            if not mount.is_dir():
                mount = cgroup_root / "cpu"
        else:
            continue
        folder = mount / path.lstrip("/")
        groups.append(CpuCgroup(mount, folder if folder.is_dir() else mount, v1))
    return groups


def _along(group: CpuCgroup, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas set on the group and its ancestors up to its mount."""
    found = []
    for folder in (group.folder, *group.folder.parents):
        if quota := read(folder):
            found.append(quota)
        if folder == group.mount:
            break
    return found


def _v2_quota(folder: Path) -> float | None:
    try:
        limit, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return int(limit) / int(period)


def _v1_quota(folder: Path) -> float | None:
    try:
        limit = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return limit / period if limit > 0 and period > 0 else None
