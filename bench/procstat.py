"""CPU time, peak memory and parentage of processes, from /proc (Linux), and the CPUs they
run on, for the benchmarks.

A process that is gone reads as absent: it adds nothing to a sum and has no children.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


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
