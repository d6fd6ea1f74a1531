"""CPU time and peak memory of processes, from /proc (Linux), for the benchmarks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def peak_rss_mib(pids: Sequence[int]) -> float:
    """Largest peak RSS (VmHWM) among ``pids``, from /proc: one worker's high-water mark."""
    peak = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


def cpu_seconds(pids: Sequence[int], *, children: bool = False) -> float:
    """User + system CPU time of ``pids`` (all their threads), from /proc/<pid>/stat.

    With ``children``, the CPU time of their reaped children counts too. A process that is
    gone counts 0.
    """
    # After the command name: [11:13] utime, stime; [13:15] cutime, cstime (proc(5) 14-17).
    last = 15 if children else 13
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        ticks += sum(int(v) for v in fields[11:last])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (a server's master and its workers, say)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    tree = [root]
    for pid in tree:  # grows while it is walked: breadth first
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree
