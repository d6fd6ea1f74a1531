"""What a backfill did: counts, failures and CPU, per shard and combined over shards."""

from __future__ import annotations

import resource
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest_processor.worker import cpu_seconds


@dataclass
class BackfillStats:
    """What a run did; live while it runs (the progress line reads it). Picklable: a shard
    process sends its stats to the process that combines them."""

    profile: str = ""
    shards: int = 1
    in_scope: int = 0  # ready images matching the filter, past the checkpoint
    to_render: int = 0  # of those, not up to date when the run started
    rendered: int = 0  # renders finished by the pool in this run
    done: int = 0  # rows updated in this run
    failed: int = 0
    outputs: int = 0  # renditions stored
    output_bytes: int = 0
    resumed_from: uuid.UUID | None = None  # the checkpoint, for one shard
    shards_resumed: int = 0  # shards that continued from a checkpoint
    earlier_done: int = 0  # done and failed by earlier sessions of a resumed run
    earlier_failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failure_examples: dict[str, uuid.UUID] = field(default_factory=dict)
    # Seconds the pool had fewer renders submitted than workers (a worker free, nothing to
    # render): the pipeline starving the CPU. Near 0 means I/O never held the renders back.
    # Combined, the sum over shards.
    pool_starved: float = 0.0
    # CPU seconds from the render pool's start to the run's end: its render workers, and the
    # process that drives them (S3 client, SQL, pickling). What sizes a backfill's machine.
    cpu_render: float = 0.0
    cpu_client: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def skipped(self) -> int:
        """In the selection but already up to date (no render)."""
        return self.in_scope - self.to_render

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def pool_fed(self) -> float:
        """Share of the time every shard's render pool had a render for each worker."""
        elapsed = self.elapsed * self.shards
        return 1 - self.pool_starved / elapsed if elapsed > 0 else 1.0

    def fail(self, image: uuid.UUID, reason: str) -> None:
        self.failed += 1
        self.failures[reason] += 1
        self.failure_examples.setdefault(reason, image)


_SUMMED = (
    "in_scope",
    "to_render",
    "rendered",
    "done",
    "failed",
    "outputs",
    "output_bytes",
    "shards_resumed",
    "earlier_done",
    "earlier_failed",
    "pool_starved",
    "cpu_render",
    "cpu_client",
)


def combine(
    parts: Sequence[BackfillStats], started: float, finished: float | None
) -> BackfillStats:
    """The shards' stats as one run's, timed by the process that ran them all."""
    total = BackfillStats(
        profile=parts[0].profile if parts else "",
        shards=len(parts),
        started=started,
        finished=finished,
    )
    for part in parts:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.failures.update(part.failures)
        for reason, image in part.failure_examples.items():
            total.failure_examples.setdefault(reason, image)
    if len(parts) == 1:
        total.resumed_from = parts[0].resumed_from
    return total


def own_cpu() -> float:
    """CPU seconds of this process, every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reaped_children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used since it was made by a render pool's workers and by this process.

    Workers that are up are read from /proc; those the pool replaced meanwhile (every
    ``render_max_renders``) count once reaped, in this process's children's time.
    """

    def __init__(self, worker_pids: Callable[[], list[int]]) -> None:
        self._worker_pids = worker_pids
        self._render, self._client = self._now()

    def _now(self) -> tuple[float, float]:
        live = sum(cpu_seconds(pid) for pid in self._worker_pids())
        return live + reaped_children_cpu(), own_cpu()

    def read(self) -> tuple[float, float]:
        """(render workers, this process) CPU seconds since the meter was made."""
        render, client = self._now()
        return render - self._render, client - self._client
