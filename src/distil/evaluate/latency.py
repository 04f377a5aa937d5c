"""Latency, throughput, size and memory of a model, measured the same way for every model.

A model is measured through a plain callable ``predict(inputs: list[str]) -> anything``: the
teacher's callable builds its few-shot prompt inside (the prompt is part of its cost), the
student's takes the bare input. Every model runs with the same explicitly set torch thread count.

Peak memory is the growth of the process's resident set size (RSS, from ``/proc/self/statm``, or
``psutil`` where there is no /proc) over its RSS before the model was loaded, sampled every few
milliseconds by a background thread while the model loads and runs. tracemalloc cannot be used: it
does not see torch's allocations. Memory freed by an earlier model and reused counts as free, so
measure the largest model last.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MEMORY_METHOD = "peak RSS growth over the RSS before loading, sampled every 2 ms (/proc/self/statm)"


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import psutil

        return int(psutil.Process().memory_info().rss)


class PeakRSS:
    """Context manager sampling RSS in a thread; ``peak_growth_bytes`` after exit."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.baseline = self.peak = current_rss_bytes()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, current_rss_bytes())

    @property
    def peak_growth_bytes(self) -> int:
        return max(self.peak - self.baseline, 0)


@contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``; the previous count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class Timing:
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput_per_s: float
    requests: int
    warmup: int
    batch_size: int
    threads: int
    samples_ms: list[float] = field(default_factory=list)
    throughput_batches: int = 0
    outputs: list[Any] = field(default_factory=list, repr=False)


def time_predict(
    predict: Callable[[list[str]], Any],
    inputs: Sequence[str],
    threads: int,
    requests: int = 100,
    warmup: int = 5,
    batch_size: int = 32,
    throughput_batches: int = 3,
    budget_s: float | None = None,
) -> Timing:
    """Batch-1 latency over ``requests`` calls after ``warmup`` calls, then throughput at ``batch_size``.

    The model's answers on all of ``inputs`` come back in ``Timing.outputs`` at no extra cost: the
    timed batch-1 calls take the inputs in order (cycling when there are fewer than ``requests``),
    the throughput batches go on with the inputs not answered yet (then cycle), and whatever is
    still unanswered after that is run in untimed batches. Throughput is examples per second over
    up to ``throughput_batches`` full batches (the batch-1 calls have warmed the model up); with
    ``budget_s`` no batch is started that would, at the last batch's pace, end past ``budget_s``
    seconds (a slow model gets one).
    """
    if not inputs:
        raise ValueError("no inputs to time the model on")
    if requests < 1:
        raise ValueError("requests must be at least 1")
    n = len(inputs)
    outputs: list[Any] = [None] * n
    answered = [False] * n

    def run(indices: list[int]) -> None:
        for i, answer in zip(indices, predict([inputs[i] for i in indices]), strict=True):
            if not answered[i]:
                outputs[i], answered[i] = answer, True

    with torch_threads(threads):
        for k in range(warmup):
            predict([inputs[k % n]])
        samples: list[float] = []
        for k in range(requests):
            t0 = time.perf_counter()
            run([k % n])
            samples.append((time.perf_counter() - t0) * 1000)
        order = [i for i in range(n) if not answered[i]] + list(range(n))  # the unanswered first, then cycling
        t0 = time.perf_counter()
        batches = 0
        while batches < max(1, throughput_batches):
            started = time.perf_counter()
            run([order[(batches * batch_size + j) % len(order)] for j in range(batch_size)])
            batches += 1
            took = time.perf_counter() - started
            if budget_s is not None and time.perf_counter() - t0 + took > budget_s:
                break
        elapsed = time.perf_counter() - t0
        rest = [i for i in range(n) if not answered[i]]
        for start in range(0, len(rest), batch_size):
            run(rest[start : start + batch_size])
    arr = np.array(samples)
    return Timing(
        p50_ms=float(np.percentile(arr, 50)),
        p95_ms=float(np.percentile(arr, 95)),
        mean_ms=float(arr.mean()),
        throughput_per_s=batch_size * batches / elapsed if elapsed > 0 else float("inf"),
        requests=len(samples),
        warmup=warmup,
        batch_size=batch_size,
        threads=threads,
        samples_ms=[float(x) for x in samples],
        throughput_batches=batches,
        outputs=outputs,
    )


# --- size --------------------------------------------------------------------------------------------


def size_on_disk(path: str | Path | None) -> int | None:
    """Bytes of a file, or of every file under a folder; None when there is no local path."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return None


def params_in_safetensors(folder: str | Path) -> int | None:
    """Parameter count read from the safetensors headers in ``folder`` (no weights loaded)."""
    import json
    import struct

    total, found = 0, False
    for f in sorted(Path(folder).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                total += int(np.prod(info["shape"])) if info["shape"] else 1
                found = True
    return total if found else None


def params_of(obj: Any) -> int | None:
    """Parameters of a loaded model, or of an object holding one in ``.model`` (unique tensors only)."""
    for candidate in (obj, getattr(obj, "model", None)):
        if candidate is not None and hasattr(candidate, "parameters"):
            seen, total = set(), 0
            for p in candidate.parameters():
                if p.data_ptr() not in seen:  # tied embeddings count once
                    seen.add(p.data_ptr())
                    total += p.numel()
            return total
    return None


def weights_in_memory(obj: Any) -> int | None:
    """Bytes of a loaded model's weights as it serves them: every unique parameter and buffer at its dtype (a GGUF
    file dequantised on load, or a float32 student, is larger here than on disk). The model is ``obj`` or its
    ``.model``; None for a model that is not a torch module (an API teacher)."""
    for candidate in (obj, getattr(obj, "model", None)):
        if candidate is not None and hasattr(candidate, "parameters") and hasattr(candidate, "buffers"):
            seen, total = set(), 0
            for tensor in (*candidate.parameters(), *candidate.buffers()):
                if tensor.data_ptr() not in seen:  # tied embeddings are held once
                    seen.add(tensor.data_ptr())
                    total += tensor.numel() * tensor.element_size()
            return total
    return None


# --- one model, end to end ---------------------------------------------------------------------------


@dataclass
class Measured:
    """What a model returned and what it cost to run: its predictor, timing and resources."""

    predictor: Any
    timing: Timing
    peak_memory_bytes: int
    params: int | None
    size_bytes: int | None  # as stored: the model's files on disk
    served_bytes: int | None = None  # as served: its weights in memory once loaded


def measure_model(
    load: Callable[[], Any],
    predict: Callable[[Any, list[str]], Any],
    inputs: Sequence[str],
    threads: int,
    requests: int = 100,
    warmup: int = 5,
    batch_size: int = 32,
    params: int | None = None,
    size_bytes: int | None = None,
    budget_s: float | None = None,
) -> Measured:
    """Load a model with ``load()`` and time ``predict(model, inputs)``, tracking peak RSS throughout.

    ``params`` defaults to counting the loaded model's parameters; ``budget_s`` as in :func:`time_predict`.
    """
    with PeakRSS() as memory:
        with torch_threads(threads):
            model = load()
        timing = time_predict(
            lambda batch: predict(model, batch), inputs, threads, requests, warmup, batch_size, budget_s=budget_s
        )
    return Measured(
        predictor=model,
        timing=timing,
        peak_memory_bytes=memory.peak_growth_bytes,
        params=params if params is not None else params_of(model),
        size_bytes=size_bytes,
        served_bytes=weights_in_memory(model),
    )
