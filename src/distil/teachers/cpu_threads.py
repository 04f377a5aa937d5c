"""How many CPU threads a local teacher's forward passes use: the cores the rest of the machine leaves free.

torch splits each CPU operation over its threads and waits for the slowest. When other programs keep
the cores busy, one of those threads is often descheduled and every operation waits for it: on two
cores at load 4-5 the SmolLM2-135M teacher labelled two to three times slower on two threads than on
one, and a decoding step was nine times slower (docs/benchmarks.md, teacher_speed). So before a batch
the teacher counts the CPU time other processes spent on its cores since its previous batch
(``/proc/stat`` busy time less this process's own) and runs one thread per core left free, at least one.
The thread count never changes an answer beyond float rounding, so it is not part of any cache key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
FIRST_WINDOW_S = 0.25  # with no earlier sample, how long the first batch watches the machine first
MIN_WINDOW_S = 0.2  # a shorter interval since the last sample keeps the last choice (too few clock ticks)
SPARE_FOR_A_THREAD = 0.75  # how much of a core must be free before a thread is put on it


@dataclass(frozen=True)
class CpuSample:
    wall: float  # monotonic seconds
    busy: float  # CPU seconds all processes spent on this process's cores (since boot)
    own: float  # CPU seconds this process spent, all its threads


def allowed_cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def busy_seconds(stat_text: str, cores: set[int], ticks_per_second: float) -> float:
    """CPU seconds spent not idle on ``cores``, from /proc/stat's per-core lines (user, nice, system, irq,
    softirq, steal; idle and iowait are not busy)."""
    total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cores:
            continue
        fields = [int(x) for x in rest.split()]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        total += user + nice + system + irq + softirq + steal
    return total / ticks_per_second


def sample(cores: set[int]) -> CpuSample | None:
    """Now's counters; None where /proc/stat cannot be read (not Linux)."""
    try:
        text = PROC_STAT.read_text()
        ticks = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    return CpuSample(time.monotonic(), busy_seconds(text, cores, ticks), time.process_time())


def free_cores(before: CpuSample, after: CpuSample, cores: int) -> float:
    """Cores left free between two samples: ``cores`` less what other processes kept busy."""
    wall = after.wall - before.wall
    if wall <= 0:
        return float(cores)
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    return cores - others


def threads_for(free: float, cores: int) -> int:
    """One thread per core at least ``SPARE_FOR_A_THREAD`` free, at least one, at most ``cores``."""
    return max(1, min(cores, int(free + 1 - SPARE_FOR_A_THREAD)))


class ThreadChooser:
    """``teachers[].threads``: a fixed count, or ``auto`` (one thread per core other processes leave free)."""

    def __init__(self, setting: int | str = "auto"):
        self.setting = setting
        self.cores = allowed_cores()
        self._last: CpuSample | None = None
        self._chosen = len(self.cores)
        self._depth = 0

    def choose(self) -> int:
        if self.setting != "auto":
            return int(self.setting)
        now = sample(self.cores)
        if now is None:
            return len(self.cores)
        if self._last is None:
            time.sleep(FIRST_WINDOW_S)
            self._last, now = now, sample(self.cores) or now
        if now.wall - self._last.wall >= MIN_WINDOW_S:
            self._chosen = threads_for(free_cores(self._last, now, len(self.cores)), len(self.cores))
            self._last = now
        return self._chosen

    @contextmanager
    def applied(self) -> Iterator[int]:
        """Run the block on the chosen number of torch threads (chosen once for nested blocks); the count
        before is restored afterwards."""
        import torch

        if self._depth:
            self._depth += 1
            try:
                yield torch.get_num_threads()
            finally:
                self._depth -= 1
            return
        before = torch.get_num_threads()
        count = self.choose()
        torch.set_num_threads(count)
        self._depth = 1
        try:
            yield count
        finally:
            self._depth = 0
            torch.set_num_threads(before)
