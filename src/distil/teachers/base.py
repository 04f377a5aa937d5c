"""What every teacher is: declared capabilities, a fingerprint, and the classify prompt it is asked.

A teacher says up front what it can return (full logits, top-k logprobs and their k, text only,
hidden states) so a step that needs more is refused before any call is made. Its fingerprint names
exactly which model answered (a weights hash, or API base URL + model + date); it goes into every
record's provenance and into the key of the on-disk call cache.

The classify prompt is the plain few-shot format, which a small instruct model follows far better
than a chat-template zero-shot question::

    {instruction}

    Ticket: I was charged twice.
    Category: billing

    Ticket: {input}
    Category:

The part before the query (instruction and shots) is the same for every input, so a local teacher
runs it once and reuses its KV cache across the batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from distil.spec.models import Task


@dataclass(frozen=True)
class Capabilities:
    """What a teacher can return. ``topk`` is the k of its top-k logprobs (0 when it gives none)."""

    full_logits: bool = False
    topk: int = 0
    text: bool = True
    hidden_states: bool = False
    continuation: bool = False  # continues raw text with no chat template around it (local models)

    @property
    def text_only(self) -> bool:
        return not self.full_logits and self.topk == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "full_logits": self.full_logits,
            "topk": self.topk,
            "text": self.text,
            "hidden_states": self.hidden_states,
            "continuation": self.continuation,
        }


@runtime_checkable
class Teacher(Protocol):
    """What the stages call on a teacher (generate, curate, evaluate, serve, monitor, iterate); see
    hf_local and openai_compat."""

    teacher_id: str
    capabilities: Capabilities
    fingerprint: str
    task: Task  # the task it answers: labels, instruction, calibration
    cost_per_call: float  # in the spec's currency; 0 for a local model

    def label_distribution(self, inputs: Sequence[str]) -> np.ndarray:
        """Probabilities over the task's labels in spec order: float64 [len(inputs), L]."""
        ...

    def generate(self, prompts: Sequence[str], **params: Any) -> list[str]:
        """The teacher's answer text for each prompt."""
        ...

    def generate_detailed(self, prompts: Sequence[str], **params: Any) -> list[dict[str, Any]]:
        """Per prompt ``{"text": ...}``, with ``topk=k`` also the answer tokens' top-k ids and log-probabilities."""
        ...

    @property
    def max_in_flight(self) -> int:
        """Requests it keeps in flight at once (0: one batch at a time); callers hand it at least this many."""
        ...

    def classify_prompt(self, text: str) -> str:
        """The full prompt the teacher is asked for ``text`` (used as part of the call-cache key)."""
        ...

    @property
    def prompt_hash(self) -> str:
        """sha256 of the prompt template with its shots (record provenance)."""
        ...

    @property
    def params(self) -> dict[str, Any]:
        """Scoring parameters that change the answer (record provenance and cache key)."""
        ...


@runtime_checkable
class CalibratedTeacher(Protocol):
    """A teacher whose contextual calibration can be computed once and handed back on a later run."""

    def content_free_distribution(self) -> np.ndarray:
        """Mean uncalibrated distribution over the content-free inputs [L] (computed once)."""
        ...

    def use_content_free(self, distribution: np.ndarray) -> None:
        """Calibrate with ``distribution`` (stored by an earlier run) instead of computing it."""
        ...


def sha256_json(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def api_fingerprint(base_url: str, model: str, date: str) -> str:
    """An API teacher has no weights to hash: the endpoint (credentials removed), the model name and the day stand
    in."""
    from distil.teachers.urls import public_url

    return f"api:{public_url(base_url.rstrip('/'))}#{model}@{date}"


# --- the classify prompt ---------------------------------------------------------------------------


def render_shot(template: str, text: str, label: str, words_by_name: dict[str, list[str]]) -> str:
    """One labelled example written with ``template``: the input, and the label's first verbalizer word."""
    return template.replace("{input}", text).replace("{label}", words_by_name.get(label, [label])[0])


class ShotRetriever:
    """Finds the labelled seeds most like an input: TF-IDF (words and word pairs) cosine similarity."""

    def __init__(self, pool: Sequence[tuple[str, str]]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.pool = list(pool)
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit([text for text, _ in self.pool])
        self.matrix = self.vectorizer.transform([text for text, _ in self.pool])

    def nearest(self, text: str, label_names: Sequence[str], per_label: int) -> list[tuple[str, str]]:
        """The ``per_label`` most similar seeds of each label (never ``text`` itself), least similar first.

        Most similar last puts the closest example next to the query; ties keep the label order.
        """
        similarity = (self.vectorizer.transform([text]) @ self.matrix.T).toarray()[0]
        order = np.argsort(-similarity, kind="stable")
        chosen: list[tuple[float, int]] = []
        for name in label_names:
            ranked = [i for i in order if self.pool[i][1] == name and self.pool[i][0] != text]
            chosen += [(float(similarity[i]), int(i)) for i in ranked[:per_label]]
        chosen.sort(key=lambda pair: pair[0])  # stable: equal similarities stay in label order
        return [self.pool[i] for _, i in chosen]


@dataclass(frozen=True)
class ClassifyPrompt:
    """The few-shot prompt of a classify task, split into the shared prefix and a per-input query.

    With ``few_shot.select: first`` the shots sit in the prefix, the same for every input. With
    ``similar`` the prefix is the instruction alone and each query starts with its own shots, chosen
    from ``shots`` (then the whole labelled pool) by ``retriever``.
    """

    prefix: str
    query_template: str  # the example template with the label left blank, answer position at its end
    label_names: list[str]
    verbalizers: list[list[str]]  # per label, the words the teacher may answer with
    shots: list[tuple[str, str]] = field(default_factory=list)
    example_template: str = "{input}\n{label}"
    separator: str = "\n\n"
    per_label: int = 0
    retriever: ShotRetriever | None = None

    def shots_for(self, text: str) -> list[tuple[str, str]]:
        """The examples shown before ``text``: the fixed shots, or the pool's nearest per label."""
        if self.retriever is None:
            return list(self.shots)
        return self.retriever.nearest(text, self.label_names, self.per_label)

    def query(self, text: str) -> str:
        asked = self.query_template.replace("{input}", text)
        if self.retriever is None:
            return asked
        words = dict(zip(self.label_names, self.verbalizers, strict=True))
        parts = [render_shot(self.example_template, t, lab, words) for t, lab in self.shots_for(text)]
        return "".join(part + self.separator for part in parts) + asked

    def full(self, text: str) -> str:
        return self.prefix + self.query(text)

    @property
    def template_hash(self) -> str:
        value: dict[str, Any] = {"prefix": self.prefix, "query": self.query_template, "verbalizers": self.verbalizers}
        if self.retriever is not None:  # the pool and how shots are drawn from it change every prompt
            value.update(
                {"select": "similar", "per_label": self.per_label, "pool": self.shots, "example": self.example_template}
            )
        return sha256_json(value)


def build_classify_prompt(task: Task, shots: Sequence[tuple[str, str]] = ()) -> ClassifyPrompt:
    """The few-shot prompt for ``task``; ``shots`` are (input, label name) pairs from the seeds.

    With ``few_shot.select: similar``, ``shots`` is the labelled pool the examples are drawn from per
    input. The query is the example template with an empty label and trailing spaces removed, so the
    next token the teacher predicts is the label word with its leading space.
    """
    fs = task.few_shot
    template = fs.template
    query_template = (
        template.replace("{label}", "").rstrip(" ") if template.endswith("{label}") else template.replace("{label}", "")
    )
    names = task.label_names
    words_by_name = {lab.name: lab.verbalizers for lab in task.labels}
    verbalizers = [words_by_name[n] for n in names]
    used = list(shots) if fs.enabled else []
    instruction = [task.instruction.strip()] if task.instruction.strip() else []
    if used and fs.select == "similar":
        prefix = fs.separator.join(instruction) + fs.separator if instruction else ""
        return ClassifyPrompt(
            prefix, query_template, names, verbalizers, used, template, fs.separator, fs.per_label, ShotRetriever(used)
        )
    parts = list(instruction)
    parts += [render_shot(template, text, label, words_by_name) for text, label in used]
    prefix = fs.separator.join(parts) + fs.separator if parts else ""
    return ClassifyPrompt(prefix, query_template, names, verbalizers, used, template, fs.separator)


def choose_shots(task: Task, labelled: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first ``few_shot.per_label`` labelled seeds of each label, interleaved label by label.

    Interleaving keeps the last shot from always being the same label (a recency bias that
    calibration would otherwise have to undo). With ``few_shot.select: similar`` every labelled seed
    of a known label is returned: the pool each input's examples are drawn from.
    """
    if task.kind != "classify" or not task.few_shot.enabled:
        return []
    if task.few_shot.select == "similar":
        return list(dict.fromkeys((text, label) for text, label in labelled if label in task.label_names))
    per_label: dict[str, list[str]] = {name: [] for name in task.label_names}
    for text, label in labelled:
        if label in per_label and len(per_label[label]) < task.few_shot.per_label and text not in per_label[label]:
            per_label[label].append(text)
    out: list[tuple[str, str]] = []
    for i in range(task.few_shot.per_label):
        for name in task.label_names:
            if i < len(per_label[name]):
                out.append((per_label[name][i], name))
    return out


# --- label distributions ---------------------------------------------------------------------------


def calibrate(probs: np.ndarray, content_free: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Contextual calibration (Zhao et al. 2021): divide by the content-free distribution, renormalise.

    probs: [n, L], content_free: [L] (mean distribution on content-free inputs). Returns [n, L].
    """
    scaled = probs / np.maximum(content_free, floor)[None, :]
    return scaled / np.maximum(scaled.sum(axis=1, keepdims=True), floor)


def one_hot_from_text(text: str, verbalizers: Sequence[Sequence[str]]) -> np.ndarray | None:
    """A one-hot label distribution for the verbalizer that appears first in ``text`` (None if none does)."""
    import re

    lowered = text.lower()
    best: tuple[int, int] | None = None
    for index, words in enumerate(verbalizers):
        for word in words:
            match = re.search(rf"(?<![a-z0-9]){re.escape(word.lower())}(?![a-z0-9])", lowered)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), index)
    if best is None:
        return None
    out = np.zeros(len(verbalizers))
    out[best[1]] = 1.0
    return out


def label_stats(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max probability, top-1 minus top-2 margin, entropy in nats) per row of probs [n, L]."""
    p = np.asarray(probs, dtype=np.float64)
    top = np.sort(p, axis=1)[:, ::-1]
    margin = top[:, 0] - (top[:, 1] if p.shape[1] > 1 else 0.0)
    entropy = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1)
    return top[:, 0], margin, entropy
