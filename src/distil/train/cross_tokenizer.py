"""Token-level KD from a teacher whose tokenizer differs from the student's (generate tasks).

The teacher reads the same answer text in its own tokens, after its own prompt; the offline cache keeps its
top-k at each of its tokens (:mod:`distil.train.logit_cache`, keyed by those tokens). The two tokenisations are
aligned by character offsets (:mod:`distil.train.alignment`), and each group of the teacher's tokens becomes
one row the ULD loss (:func:`distil.train.losses.uld_loss`) compares with the student's group covering the same
text: the teacher's top-k at the group's first token, and the log-probability of the group's other tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from distil.errors import TrainError
from distil.teachers.loading import local_model_folder
from distil.train.alignment import answer_with_ends, text_groups
from distil.train.batches import GenerateExamples, answer_limit
from distil.train.logit_cache import cached_topk, teacher_prompt_ids

if TYPE_CHECKING:
    import torch
    from rich.console import Console
    from transformers import PreTrainedTokenizerBase

    from distil.spec.io import Project


def chosen_logprobs(topk_ids: np.ndarray, topk_logprobs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The log-probability the teacher gave each token it was fed ([M] from [M, k] top-k and [M] tokens). A token
    outside its top-k gets the k-th value, the most it can have had (a teacher writing its own text greedily
    always has its token first)."""
    hit = topk_ids == tokens[:, None]
    found = np.where(hit.any(-1), np.where(hit, topk_logprobs, 0.0).sum(-1), topk_logprobs[:, -1])
    return found.astype(np.float32)


def group_rows(
    topk_ids: np.ndarray, topk_logprobs: np.ndarray, tokens: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One row per group of the teacher's tokens ([M] groups 0..G-1, -1 ignored): its top-k log-probabilities at
    the group's first token [G, k] (sorted, as the cache keeps them) and the summed log-probability of the
    group's other tokens [G] (0 for a one-token group)."""
    return rows_by_group(topk_logprobs, chosen_logprobs(topk_ids, topk_logprobs.astype(np.float32), tokens), groups)


def rows_by_group(topk_logprobs: np.ndarray, chosen: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[M, k] top-k log-probabilities (sorted), [M] the log-probability of each token written, [M] groups ->
    the first token's row per group [G, k] and the summed log-probability of the group's other tokens [G]."""
    n_groups = int(groups.max()) + 1 if len(groups) and groups.max() >= 0 else 0
    rows = np.zeros((n_groups, topk_logprobs.shape[1]), dtype=np.float32)
    chain = np.zeros(n_groups, dtype=np.float32)
    seen: set[int] = set()
    for j, g in enumerate(groups.tolist()):
        if g < 0:
            continue
        if g in seen:
            chain[g] += chosen[j]
        else:
            rows[g] = topk_logprobs[j]
            seen.add(g)
    return rows, chain


def teacher_answers(
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    examples: GenerateExamples,
    max_length: int,
) -> tuple[list[list[int]], list[np.ndarray], list[np.ndarray]]:
    """Each answer text in the teacher's tokens (then its EOS, cut like the student's), and the text-aligned
    groups of both sides' tokens: (teacher answer ids, student groups [n_i], teacher groups [m_i])."""
    limit = answer_limit(max_length)
    answers, student_groups, teacher_groups = [], [], []
    for text, student_ids in zip(examples.answer_texts, examples.answer_ids, strict=True):
        ids, student_ends = answer_with_ends(student_tokenizer, text, limit)
        if ids != student_ids:
            raise TrainError("the student's answer tokens changed between tokenising and aligning them")
        teacher_ids, teacher_ends = answer_with_ends(teacher_tokenizer, text, limit)
        s_groups, t_groups = text_groups(student_ends, teacher_ends)
        answers.append(teacher_ids)
        student_groups.append(s_groups)
        teacher_groups.append(t_groups)
    return answers, student_groups, teacher_groups


def attach_aligned_teacher(
    project: Project,
    source: str,
    examples: GenerateExamples,
    k: int,
    student_tokenizer: PreTrainedTokenizerBase,
    console: Console | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """Give ``examples`` the local teacher's text-aligned targets (``uld_*``), scoring the answers in the
    teacher's own tokens after its own prompt through the offline cache (built on ``device``)."""
    # transformers is slow to import; only a run that distils across tokenizers pays for it
    from transformers import AutoTokenizer

    if not examples.answer_texts:
        raise TrainError("the training examples carry no answer text to align the two tokenizers on")
    teacher_tokenizer = AutoTokenizer.from_pretrained(str(local_model_folder(source)[0]))
    if not examples.teacher_prompt_ids:
        examples.teacher_prompt_ids = teacher_prompt_ids(
            teacher_tokenizer, project.spec.task.instruction, examples.inputs
        )
    answers, student_groups, teacher_groups = teacher_answers(
        teacher_tokenizer, student_tokenizer, examples, project.spec.train.max_length
    )
    view = GenerateExamples(list(examples.teacher_prompt_ids), answers)
    vocab = len(teacher_tokenizer)
    cache = cached_topk(project, source, view, min(k, vocab), console, device)
    examples.uld_groups, examples.uld_teacher_logprobs, examples.uld_teacher_chain = [], [], []
    for i, (s_groups, t_groups) in enumerate(zip(student_groups, teacher_groups, strict=True)):
        ids, logprobs = cache.example(i)
        rows, chain = group_rows(ids, logprobs, np.asarray(answers[i]), t_groups)
        examples.uld_groups.append(s_groups)
        examples.uld_teacher_logprobs.append(rows)
        examples.uld_teacher_chain.append(chain)
    if console is not None:
        aligned = sum(int((g >= 0).sum()) for g in student_groups)
        total = sum(len(g) for g in student_groups)
        console.print(
            f"cross-tokenizer KD (ULD): {aligned:,} of {total:,} answer tokens aligned with the teacher's by text"
        )
