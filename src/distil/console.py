"""Output a person can read: quiet libraries, and progress that shows up in a terminal and in a log file alike.

- :func:`quiet_third_party` silences what the libraries underneath print on their own (transformers'
  deprecation warnings, its load reports and "Loading weights" bars, the GGUF de-quantizing bar, hub
  warnings, Python warnings) unless ``--debug``; the CLI calls it once, at start.
- :func:`progress` is the one progress display: a rich bar in a terminal; without one (CI, nohup, a log
  file) a plain line every ``DISTIL_PROGRESS_INTERVAL`` seconds (default 10) with the items done, the
  rate and the time left, instead of nothing until the step ends.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn

PROGRESS_INTERVAL_ENV = "DISTIL_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL_S = 10.0
# Read by the libraries when they are imported; set before any of them is.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads and transformers' own bars ("Loading weights")
    "TQDM_DISABLE": "1",  # bars that call tqdm directly ("Converting and de-quantizing GGUF tensors")
    "TRANSFORMERS_VERBOSITY": "error",  # load reports, "`past_key_values` is deprecated" and other advice
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
QUIET_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "peft", "torch", "onnxruntime", "urllib3", "httpx")


def quiet_third_party(debug: bool = False) -> None:
    """Silence third-party warnings, log lines and loading bars, unless ``debug``; values the user set in the
    environment win. Safe to call more than once."""
    if debug:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    warnings.simplefilter("ignore")  # distil speaks through its console; a Python warning is always a library's
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already (a library caller, a test): tell it directly too
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def progress_interval() -> float:
    """Seconds between plain progress lines (``DISTIL_PROGRESS_INTERVAL``; 0 writes a line at every update)."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else DEFAULT_PROGRESS_INTERVAL_S
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL_S


def progress(
    *columns: ProgressColumn,
    console: Console | None = None,
    disable: bool = False,
    unit: str = "items",
    detail: str = "",
) -> Any:
    """A rich ``Progress`` with ``columns`` in a terminal, else a :class:`PlainProgress` writing lines to ``console``.

    Both take ``add_task(description, total=..., completed=..., **fields)``, ``update(task, advance=..., **fields)``,
    ``advance(task, n)`` and are context managers. ``unit`` names the items and ``detail`` (a format string over
    the task's fields, e.g. ``"loss {loss:.4f}"``) adds to each plain line.
    """
    from rich.console import Console  # rich is slow to import; only commands that show progress pay for it
    from rich.progress import Progress

    console = console or Console()
    if console.is_terminal or disable:
        return Progress(*columns, console=console, disable=disable, transient=False)
    return PlainProgress(console, unit=unit, detail=detail, interval_s=progress_interval())


@dataclass
class _PlainTask:
    description: str
    total: float | None
    completed: float
    fields: dict[str, Any]
    started: float
    start_completed: float
    last_line: float
    finished: bool = False


@dataclass
class PlainProgress:
    """Progress as plain lines for a log: one per task every ``interval_s`` seconds, and one when it finishes."""

    console: Console
    unit: str = "items"
    detail: str = ""
    interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    tasks: dict[int, _PlainTask] = field(default_factory=dict)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task in self.tasks.values():
            if not task.finished and task.completed > task.start_completed:
                self._line(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        now = time.monotonic()
        task_id = len(self.tasks)
        self.tasks[task_id] = _PlainTask(description, total, completed, fields, now, completed, now)
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self,
        task_id: int,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        **fields: Any,
    ) -> None:
        task = self.tasks[task_id]
        task.completed = completed if completed is not None else task.completed + (advance or 0)
        task.total = total if total is not None else task.total
        task.fields.update(fields)
        done = task.total is not None and task.completed >= task.total
        if done or time.monotonic() - task.last_line >= self.interval_s:
            self._line(task)
            task.finished = done

    def _line(self, task: _PlainTask) -> None:
        now = time.monotonic()
        task.last_line = now
        elapsed = max(now - task.started, 1e-9)
        rate = (task.completed - task.start_completed) / elapsed
        of_total = f"/{task.total:,.0f}" if task.total else ""
        parts = [f"{task.description}: {task.completed:,.0f}{of_total} {self.unit}", f"{rate:,.1f} {self.unit}/s"]
        if task.total and task.completed >= task.total:
            parts.append(f"done in {format_seconds(elapsed)}")
        elif task.total and rate > 0:
            parts.append(f"about {format_seconds((task.total - task.completed) / rate)} left")
        if self.detail:
            try:
                parts.append(self.detail.format(**task.fields))
            except (KeyError, ValueError, TypeError):
                pass  # a field not set yet (e.g. no loss before the first step)
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: how long, read at a glance."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
