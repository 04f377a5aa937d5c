"""Micro-batching behind a bounded queue: requests that arrive together share one forward pass, and a model
never has more than ``depth`` requests waiting for it.

Callers hand their inputs to one worker per model (:meth:`MicroBatcher.submit` returns a future at once, so
the server's event loop awaits it without holding a thread). The worker waits at most ``max_wait_s`` for
company, runs a single ``predict`` call over everything queued (up to ``max_batch`` inputs that share the same
parameters), and gives each caller its rows back. Under load this trades a millisecond or two of waiting for
far fewer, fuller passes; with one client it costs only the wait.

A full queue refuses a new request at once (:class:`QueueFull`) instead of letting it wait behind work it
cannot overtake; a caller that stops waiting cancels its future, and a cancelled request is dropped before
its pass, so time-outs cost no model work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np


class QueueFull(Exception):
    """The model already has ``depth`` requests waiting or running."""

    def __init__(self, name: str, depth: int):
        super().__init__(f"the {name} queue is full ({depth} requests waiting or running)")
        self.name, self.depth = name, depth


class MicroBatcher:
    """Thread-safe ``label_distribution(inputs) -> [n, L]`` around ``predict`` with micro-batching.

    ``predict(texts, **params)`` is any batch call (``label_distribution``, ``generate``); requests are merged
    only with others of equal ``params``. ``depth`` (None: unbounded) caps the requests submitted and not done.
    """

    def __init__(
        self,
        predict: Callable[..., Any],
        max_batch: int = 32,
        max_wait_s: float = 0.002,
        labels: Sequence[str] = (),
        depth: int | None = None,
        name: str = "model",
    ):
        self.predict = predict
        self.max_batch = max(1, int(max_batch))
        self.max_wait_s = max_wait_s
        self.labels = list(labels)
        self.depth = depth
        self.name = name
        self._pending: list[tuple[list[str], dict[str, Any], Future]] = []
        self._live = 0  # requests submitted and not yet done: waiting, or in the pass now running
        self._cond = threading.Condition()
        self._stopped = False
        self.passes = 0  # forward passes run, for tests and metrics
        self._worker = threading.Thread(target=self._run, name=f"micro-batcher-{name}", daemon=True)
        self._worker.start()

    @property
    def load(self) -> int:
        """Requests waiting or running now."""
        return self._live

    @property
    def full(self) -> bool:
        return self.depth is not None and self._live >= self.depth

    def submit(self, inputs: Sequence[str], **params: Any) -> Future:
        """Queue ``inputs`` for the next pass; the future holds their rows. QueueFull when ``depth`` are waiting."""
        future: Future = Future()
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"the {self.name} micro-batcher is stopped")
            if self.depth is not None and self._live >= self.depth:
                raise QueueFull(self.name, self.depth)
            self._live += 1
            self._pending.append((list(inputs), params, future))
            self._cond.notify()
        future.add_done_callback(self._finished)  # answered, failed or cancelled: the slot is free again
        return future

    def label_distribution(self, inputs: Sequence[str]) -> np.ndarray:
        """Blocking: the rows for ``inputs`` (for callers outside the event loop)."""
        if not inputs:
            return np.zeros((0, len(self.labels)))
        return self.submit(inputs).result()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._worker.join(timeout=5)

    def _finished(self, _: Future) -> None:
        with self._cond:
            self._live -= 1

    def _take_batch(self) -> list[tuple[list[str], dict[str, Any], Future]]:
        """Block for the first request, then gather more until the batch is full or the wait is over."""
        with self._cond:
            while True:
                self._pending = [p for p in self._pending if not p[2].cancelled()]
                if self._pending or self._stopped:
                    break
                self._cond.wait()
            if not self._pending:
                return []
            deadline = time.monotonic() + self.max_wait_s
            while sum(len(x) for x, _, _ in self._pending) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken: list[tuple[list[str], dict[str, Any], Future]] = []
            size = 0
            params = self._pending[0][1]
            while self._pending and self._pending[0][1] == params:
                if taken and size + len(self._pending[0][0]) > self.max_batch:
                    break
                item = self._pending.pop(0)
                taken.append(item)
                size += len(item[0])
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take_batch()
            if not taken and self._stopped:
                return
            # a caller that gave up meanwhile is dropped here; once running, a future can no longer be cancelled
            taken = [item for item in taken if item[2].set_running_or_notify_cancel()]
            if not taken:
                continue
            texts = [t for inputs, _, _ in taken for t in inputs]
            try:
                out = self.predict(texts, **taken[0][1])
                out = out if isinstance(out, list) else np.asarray(out)
            except BaseException as exc:  # hand the failure to every caller of this pass
                for _, _, future in taken:
                    future.set_exception(exc)
                continue
            self.passes += 1
            start = 0
            for inputs, _, future in taken:
                future.set_result(out[start : start + len(inputs)])
                start += len(inputs)


def batched(
    predictor: Any, max_batch: int = 32, max_wait_s: float = 0.002, depth: int | None = None, name: str = "model"
) -> MicroBatcher:
    """A micro-batcher over ``predictor.label_distribution``; keeps its ``labels``."""
    labels = getattr(predictor, "labels", []) or []
    return MicroBatcher(predictor.label_distribution, max_batch, max_wait_s, labels, depth, name)
