"""CPU time, peak memory and parentage of processes, from /proc (Linux), and the CPUs they
run on and the CPU time they may have (cgroup quotas), for the benchmarks.

A process that is gone reads as absent: it adds nothing to a sum and has no children.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ingest_common.cpus import cpu_cgroups


def _read(pid: int | str, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:
        return None


def _stat_fields(stat: str) -> list[str]:
    """Fields after the command name (which may hold spaces): [1] ppid, [11:15] CPU ticks."""
    return stat.rpartition(")")[2].split()


def peak_rss_mib(pids: Sequence[int]) -> float:
    """Largest peak RSS (VmHWM) among ``pids``, from /proc: one worker's high-water mark."""
    peak = 0
    for pid in pids:
        for line in (_read(pid, "status") or "").splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


def cpu_seconds(pids: Sequence[int], *, children: bool = False) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc/<pid>/stat.

    With ``children``, the CPU time of their reaped children counts too.
    """
    # [11:13] utime, stime; [13:15] cutime, cstime (proc(5) fields 14-17).
    last = 15 if children else 13
    ticks = 0
    for pid in pids:
        if (stat := _read(pid, "stat")) is not None:
            ticks += sum(int(v) for v in _stat_fields(stat)[11:last])
    return ticks / os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, int]:
    """Every live process's parent pid."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _read(entry.name, "stat")) is not None:
            parents[int(entry.name)] = int(_stat_fields(stat)[1])
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (a server's master and its workers, say)."""
    parents = _parents()
    tree = [root]
    for pid in tree:  # grows while it is walked: breadth first
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


def own_child(fragment: str) -> int | None:
    """A child of this process whose command line contains ``fragment``."""
    for pid, parent in _parents().items():
        cmdline = _read(pid, "cmdline") if parent == os.getpid() else None
        if cmdline is not None and fragment in cmdline.replace("\0", " "):
            return pid
    return None


def split_cpus(apart: int) -> tuple[set[int], set[int]]:
    """This process's CPUs as (the rest, the last ``apart`` of them)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not 0 <= apart < len(cpus):
        raise ValueError(f"{apart} CPU(s) apart leaves none of this process's {len(cpus)}")
    cut = len(cpus) - apart
    return set(cpus[:cut]), set(cpus[cut:])


def add_emulator_cpus(parser: argparse.ArgumentParser) -> None:
    """The benches' --emulator-cpus N, for `set_emulator_apart`."""
    parser.add_argument(
        "--emulator-cpus",
        type=int,
        default=0,
        metavar="N",
        help="run the emulator (and the latency proxy, if any) on the last N CPUs and everything"
        " else, the render core included, on the rest, as in AWS, where S3 and SQS do not run on"
        " ingest's CPUs",
    )


def set_emulator_apart(count: int) -> set[int]:
    """Pin the calling thread, and what it starts from now on, to all but the last ``count``
    of its CPUs; return those, for the emulator (none if ``count`` is 0). Exits if no CPU
    would be left."""
    try:
        stack, emulator = split_cpus(count)
    except ValueError as exc:
        raise SystemExit(f"--emulator-cpus: {exc}") from None
    os.sched_setaffinity(0, stack)
    return emulator


@contextmanager
def on_cpus(cpus: set[int]) -> Iterator[None]:
    """Within: the calling thread, and the processes and threads it starts, run on ``cpus``
    (none: unchanged). Linux gives a new thread or process its creator's affinity."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuQuotaUnavailable(RuntimeError):
    """No cgroup CPU controller this process may write (not root, or none mounted)."""


@dataclass(frozen=True)
class CpuGroup:
    """A cgroup whose processes share a quota of CPU time, as a container or an ECS
    task given that much CPU. A process started from within `joined` runs in it, and so do
    the processes it starts (Linux puts a child in its parent's cgroup)."""

    folder: Path
    home: Path  # this process's group in the same hierarchy, where `joined` returns it

    @contextmanager
    def joined(self) -> Iterator[None]:
        """Within: this process (all its threads) is in the group; after: back home."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))
        try:
            yield
        finally:
            (self.home / "cgroup.procs").write_text(str(os.getpid()))


@contextmanager
def cpu_quota_group(name: str, cpus: float, *, root: Path = CGROUP_ROOT) -> Iterator[CpuGroup]:
    """A new cgroup ``name`` of ``cpus`` CPUs' time (cgroup v1's cpu controller, or v2 where
    the root delegates cpu), removed on exit, when its processes must have ended. Raises
    `CpuQuotaUnavailable` where no such group can be made."""
    if cpus <= 0:
        raise ValueError(f"a CPU quota must be positive, not {cpus:g}")
    period = 100_000  # µs: the kernel's default CFS period
    quota = max(1_000, round(cpus * period))
    # The new group sits at the hierarchy's top; this process's group there is its home.
    groups = cpu_cgroups(cgroup_root=root)
    if v1 := next((g for g in groups if g.v1 and (g.mount / "cpu.cfs_quota_us").is_file()), None):
        mount, home = v1.mount, v1.folder
        settings = {"cpu.cfs_period_us": str(period), "cpu.cfs_quota_us": str(quota)}
    elif v2 := next(
        (g for g in groups if not g.v1 and "cpu" in _words(g.mount / "cgroup.subtree_control")),
        None,
    ):
        mount, home = v2.mount, v2.folder
        settings = {"cpu.max": f"{quota} {period}"}
    else:
        raise CpuQuotaUnavailable(f"no cgroup CPU controller under {root}")
    folder = mount / name
    try:
        folder.mkdir()
    except OSError as exc:
        raise CpuQuotaUnavailable(f"cannot make a CPU quota group at {folder}: {exc}") from exc
    try:
        for file, value in settings.items():
            (folder / file).write_text(value)
    except OSError as exc:
        folder.rmdir()
        raise CpuQuotaUnavailable(f"cannot set the CPU quota of {folder}: {exc}") from exc
    group = CpuGroup(folder, home)
    try:
        yield group
    finally:
        _remove_group(group)


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _remove_group(group: CpuGroup, timeout: float = 10.0) -> None:
    """rmdir the group once its processes are gone. One that outlives the processes it was
    started for goes back home first: multiprocessing's resource tracker, which a render
    pool started from within `joined` leaves running until this process exits."""
    deadline = time.monotonic() + timeout
    while True:
        # The group's own processes (a stopped service's) are ending: they are waited for.
        for pid in (group.folder / "cgroup.procs").read_text().split():
            if "resource_tracker" in (_read(pid, "cmdline") or ""):
                with suppress(OSError):  # it ended meanwhile
                    (group.home / "cgroup.procs").write_text(pid)
        try:
            group.folder.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
