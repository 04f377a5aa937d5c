"""Local teacher weights loaded once and lent to every teacher built on the same files.

A stack escalates each specialist to one generalist, and each specialist builds its own teacher (its labels,
prompt and few-shot examples). With a local generalist that would be one copy of the same weights per
specialist; :class:`SharedLocalModels` loads the model and tokenizer once per resolved source and precision and
hands them to each teacher, which keeps its own per-task prompt state. Callers that share the weights share one
lock too: a tokenizer is not safe to call from two threads at once, and the teacher sets its padding side while it
generates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from distil.teachers.loading import LocalSource, load_causal_lm, resolve_source

LOCAL_SCHEMES = ("hf", "gguf")


@dataclass(frozen=True)
class LoadedWeights:
    """One local model in memory, the tokenizer loaded with it, its weights' fingerprint, and the lock every caller
    of either takes."""

    model: Any
    tokenizer: Any
    fingerprint: str
    lock: threading.Lock


class SharedLocalModels:
    """Local causal LMs keyed by (the files a source resolves to, dtype): two sources naming the same folder (a
    relative and an absolute path, say) share one load."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[LocalSource, str], LoadedWeights] = {}

    def weights(self, source: str, dtype: str = "float32") -> LoadedWeights:
        """The model ``source`` names in ``dtype``, loaded on the first call; float32 is what a local teacher loads
        on its own."""
        key = (resolve_source(source), dtype)
        if key not in self._loaded:
            model, tokenizer, fingerprint = load_causal_lm(source, dtype)
            self._loaded[key] = LoadedWeights(model, tokenizer, fingerprint, threading.Lock())
        return self._loaded[key]

    def teacher_parts(self, source: str) -> dict[str, Any]:
        """The keyword arguments that hand a local teacher these weights instead of its own load."""
        loaded = self.weights(source)
        return {"model": loaded.model, "tokenizer": loaded.tokenizer, "fingerprint": loaded.fingerprint}
