"""From curated records to tensors: the newest curated dataset, tokenised examples, micro-batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from distil.data.records import Record
from distil.errors import DataError
from distil.runs import latest_curated
from distil.train.students import CLASSIFY_TEMPLATE, GENERATE_TEMPLATE, encode_prompts

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedTokenizerBase

    from distil.spec.io import Project


@dataclass
class CuratedDataset:
    dataset_hash: str
    path: Path
    splits: dict[str, list[Record]]


def curated_splits(project: Project) -> CuratedDataset:
    """The newest curated dataset (:func:`distil.runs.latest_curated`: a verified ledger row, its recorded files
    checked) with its train / validation / test records read."""
    data = latest_curated(project)
    splits = {split: data.records(split) for split in ("train", "validation", "test")}
    if not splits["train"]:
        raise DataError(
            f"{data.folder}: the curated dataset has no training records",
            hint="run `distil curate` again with looser filters",
        )
    return CuratedDataset(data.dataset_hash, data.folder, splits)


# --- classify ------------------------------------------------------------------------------------------


@dataclass
class ClassifyExamples:
    prompts: list[str]
    teacher_probs: Tensor  # [n, L] float32, the teacher's label distribution
    hard: Tensor  # [n] int64: the gold label where a record has one, else the teacher's argmax
    inputs: list[str] = field(default_factory=list)  # the bare inputs, in the same order
    rationales: list[str | None] = field(default_factory=list)  # the teacher's rationale per example, if any


def classify_examples(records: list[Record], labels: list[str], template: str = CLASSIFY_TEMPLATE) -> ClassifyExamples:
    """Each record's prompt (``template`` around the input: the causal student's label suffix, or the bare
    input for an encoder), the teacher's label distribution and the hard label."""
    index = {name: i for i, name in enumerate(labels)}
    prompts, probs, hard, inputs, rationales = [], [], [], [], []
    for r in records:
        if r.label_probs is not None and len(r.label_probs) == len(labels):
            p = np.asarray(r.label_probs, dtype=np.float64)
            p = p / max(p.sum(), 1e-12)
        elif r.label in index:
            p = np.eye(len(labels))[index[r.label]]
        else:
            continue  # nothing to learn from: no teacher distribution and no teacher label
        prompts.append(template.replace("{input}", r.input))
        probs.append(p)
        hard.append(index[r.gold_label] if r.gold_label in index else int(np.argmax(p)))
        inputs.append(r.input)
        rationales.append(r.rationale.strip() if r.rationale and r.rationale.strip() else None)
    if not prompts:
        raise DataError(
            "no record carries a label distribution for the spec's labels",
            hint="check task.labels against the curated data",
        )
    return ClassifyExamples(
        prompts, torch.tensor(np.array(probs), dtype=torch.float32), torch.tensor(hard), inputs, rationales
    )


def classify_batch(
    tokenizer: PreTrainedTokenizerBase, examples: ClassifyExamples, rows: list[int], max_length: int
) -> dict[str, Tensor]:
    enc = encode_prompts(tokenizer, [examples.prompts[i] for i in rows], max_length)
    return {**enc, "teacher_probs": examples.teacher_probs[rows], "hard": examples.hard[rows]}


# --- generate -----------------------------------------------------------------------------------------------


@dataclass
class GenerateExamples:
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]  # the teacher's text, tokenised, ending with EOS
    topk_ids: list[np.ndarray | None] = field(default_factory=list)  # per example [n_answer, k] int32
    topk_logprobs: list[np.ndarray | None] = field(default_factory=list)  # per example [n_answer, k] fp16
    # the offline cache's rows of example i, (ids, log-probabilities) [n_answer, k], read when a batch needs them
    topk_reader: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
    inputs: list[str] = field(default_factory=list)  # the bare inputs (the teacher's prompt is built from them)
    teacher_prompt_ids: list[list[int]] = field(
        default_factory=list
    )  # the teacher's own prompt per example, when known
    answer_texts: list[str] = field(default_factory=list)  # the text each answer_ids tokenises (before EOS)
    # a teacher whose tokenizer differs (ULD, distil.train.cross_tokenizer): per example, each answer token's
    # text-aligned group [n_answer] (-1: none), and per group the teacher's top-k log-probs [G, k] and chain [G]
    uld_groups: list[np.ndarray] = field(default_factory=list)
    uld_teacher_logprobs: list[np.ndarray] = field(default_factory=list)
    uld_teacher_chain: list[np.ndarray] = field(default_factory=list)
    # an API teacher's answer as its records carry it: per answer token, the written token then its top alternatives
    # as text, and their log-probabilities (None for an example without them); distil.train.api_topk reads these
    api_tokens: list[list[list[str]] | None] = field(default_factory=list)
    api_logprobs: list[list[list[float]] | None] = field(default_factory=list)

    def tokens(self, rows: list[int]) -> int:
        """Answer tokens in ``rows``: the normaliser of the per-token losses."""
        return sum(len(self.answer_ids[i]) for i in rows)

    @property
    def has_topk(self) -> bool:
        return self.topk_reader is not None or (bool(self.topk_ids) and all(t is not None for t in self.topk_ids))

    def topk(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Example i's top-k per answer token, (ids, log-probabilities) [n_answer, k]: from the cache, else the
        record's own."""
        if self.topk_reader is not None:
            return self.topk_reader(i)
        return self.topk_ids[i], self.topk_logprobs[i]

    @property
    def has_api_topk(self) -> bool:
        return any(rows is not None for rows in self.api_tokens)

    @property
    def has_aligned(self) -> bool:
        return len(self.uld_groups) == len(self.answer_ids) > 0


def answer_limit(max_length: int) -> int:
    """The most answer tokens (EOS included) an example keeps: half the sequence, the prompt gets the rest."""
    return max(1, max_length // 2)


def generate_examples(records: list[Record], tokenizer: PreTrainedTokenizerBase, max_length: int) -> GenerateExamples:
    """Prompt and answer ids tokenised apart, so the teacher cache and the student see the same answer ids."""
    out = GenerateExamples([], [])
    for r in records:
        if not r.teacher_text:
            continue
        prompt = tokenizer(GENERATE_TEMPLATE.replace("{input}", r.input), add_special_tokens=False).input_ids
        text = " " + r.teacher_text.strip()
        answer = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        answer = answer[: answer_limit(max_length)]
        prompt = prompt[-(max_length - len(answer)) :]
        out.prompt_ids.append(prompt)
        out.answer_ids.append(answer)
        out.inputs.append(r.input)
        out.answer_texts.append(text)
        api = bool(r.topk_tokens and r.topk_logprobs and len(r.topk_tokens) == len(r.topk_logprobs))
        out.api_tokens.append(r.topk_tokens if api else None)
        out.api_logprobs.append(r.topk_logprobs if api else None)
        # a record's own top-k counts only when it scored exactly these answer tokens (its greedy path)
        if (
            r.topk_ids
            and r.topk_logprobs
            and len(r.topk_ids) >= len(answer)
            and [row[0] for row in r.topk_ids[: len(answer)]] == answer
        ):
            out.topk_ids.append(np.asarray(r.topk_ids[: len(answer)], dtype=np.int32))
            out.topk_logprobs.append(np.asarray(r.topk_logprobs[: len(answer)], dtype=np.float16))
        else:
            out.topk_ids.append(None)
            out.topk_logprobs.append(None)
    if not out.answer_ids:
        raise DataError(
            "no record carries teacher text to learn from", hint="run `distil generate` for this generate task"
        )
    return out


def generate_batch(examples: GenerateExamples, rows: list[int], pad_id: int, with_topk: bool) -> dict[str, Tensor]:
    """input_ids / attention_mask / targets [B, S] (targets[t] is the token after position t, -100 if not
    an answer token), plus the flattened top-k of the answer tokens in the same order ([N, k])."""
    seqs = [examples.prompt_ids[i] + examples.answer_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    for b, (i, seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[b, : len(seq)] = torch.tensor(seq)
        attention[b, : len(seq)] = 1
        start = len(examples.prompt_ids[i]) - 1  # the last prompt position predicts the first answer token
        targets[b, start : start + len(examples.answer_ids[i])] = torch.tensor(examples.answer_ids[i])
    batch = {"input_ids": input_ids, "attention_mask": attention, "targets": targets}
    if with_topk and examples.has_aligned:
        batch.update(aligned_batch(examples, rows))
    elif with_topk:
        ids, logprobs = zip(*(examples.topk(i) for i in rows), strict=True)
        batch["topk_ids"] = torch.from_numpy(np.concatenate(ids)).long()
        batch["topk_logprobs"] = torch.from_numpy(np.concatenate(logprobs).astype(np.float32))
    return batch


def aligned_batch(examples: GenerateExamples, rows: list[int]) -> dict[str, Tensor]:
    """The cross-tokenizer targets of ``rows``, in the order of their answer tokens: ``uld_groups`` [N] (group ids
    made unique across the batch; -1 stays -1), ``uld_teacher_logprobs`` [G, k] and ``uld_teacher_chain`` [G]."""
    groups, offset = [], 0
    for i in rows:
        g = examples.uld_groups[i].astype(np.int64)
        groups.append(np.where(g >= 0, g + offset, -1))
        offset += len(examples.uld_teacher_chain[i])
    return {
        "uld_groups": torch.from_numpy(np.concatenate(groups)),
        "uld_teacher_logprobs": torch.from_numpy(
            np.concatenate([examples.uld_teacher_logprobs[i] for i in rows]).astype(np.float32)
        ),
        "uld_teacher_chain": torch.from_numpy(
            np.concatenate([examples.uld_teacher_chain[i] for i in rows]).astype(np.float32)
        ),
    }
