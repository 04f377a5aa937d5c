"""Inputs cut to the student's context before any model sees them, and the cut reported.

A served text longer than the student reads loses its start, as it did in training (``encode_prompts``
truncates on the left, so the end of the text and the answer position stay). The cut is made here, once,
before the student and the teacher are asked: the teacher gets the same bounded text, so a 1 MB body can no
longer ask a model for tens of gigabytes. Cutting first to ``CHARS_PER_TOKEN`` characters per token keeps the
tokenizer's own work small whatever the body held.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHARS_PER_TOKEN = 16  # more than any tokenizer here spends on one token: a safe first cut before tokenizing


@dataclass(frozen=True)
class Fitted:
    """One input as the models will read it."""

    text: str
    tokens: int  # tokens of ``text`` (what is kept)
    dropped_characters: int  # 0 when nothing was cut

    @property
    def truncated(self) -> bool:
        return self.dropped_characters > 0


class ContextFitter:
    """Keep the last ``max_tokens`` tokens of each text. Its own tokenizer, used from one thread (the student's
    worker: tokenizing is CPU work the event loop must not do)."""

    def __init__(self, tokenizer: Any, max_tokens: int):
        self.tokenizer = tokenizer
        self.max_tokens = max(1, int(max_tokens))

    def __call__(self, text: str) -> Fitted:
        return self.fit_all([text])[0]

    def fit_all(self, texts: list[str]) -> list[Fitted]:
        windows = [text[-self.max_tokens * CHARS_PER_TOKEN :] for text in texts]
        encoded = self.tokenizer(windows, add_special_tokens=False, return_offsets_mapping=True)
        out = []
        for text, window, offsets in zip(texts, windows, encoded["offset_mapping"], strict=True):
            if len(offsets) <= self.max_tokens:
                out.append(Fitted(window, len(offsets), len(text) - len(window)))
            else:
                kept = window[offsets[-self.max_tokens][0] :]
                out.append(Fitted(kept, self.max_tokens, len(text) - len(kept)))
        return out


def as_sent(texts: list[str]) -> list[Fitted]:
    """No fitter: each text as sent, its words counted as its tokens."""
    return [Fitted(text, len(text.split()), 0) for text in texts]


def student_fitter(folder: str | Path) -> ContextFitter:
    """The fitter for a student folder: its tokenizer, and its ``max_length`` less what the prompt template adds."""
    from transformers import AutoTokenizer

    from distil.train.students import read_task

    folder = Path(folder)
    task = read_task(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    template = task.get("prompt_template", "{input}").replace("{input}", "")
    overhead = len(tokenizer(template, add_special_tokens=True)["input_ids"])
    return ContextFitter(tokenizer, int(task["max_length"]) - overhead)
