"""Token-level KD from an API teacher's top logprobs (generate tasks).

An OpenAI-compatible server (vLLM, SGLang, TGI, a hosted API) returns, per answer token, the token it wrote and
its top alternatives as *text* with their log-probabilities; the records keep them (``topk_tokens``, written
token first, and ``topk_logprobs``). Their ids are the server's, which distil never sees, so the rows reach the
student one of two ways:

- by id (the teacher's tokenizer is the student's): each token's text is looked up among the student's tokens
  as each decodes alone (:func:`decoded_vocabulary`). Where the answer's text is cut alike on both sides (one
  student token and one teacher token cover the same text, :mod:`distil.train.alignment`) and the written token
  maps to the student's token there, the position gets the teacher's alternatives that map (the rest of the
  mass goes to the tail bucket of :func:`distil.train.losses.topk_kd_loss`); any other position (the first word
  when the student reads it after a space, EOS, which the server does not send) is one-hot on the text's token,
  i.e. cross-entropy. Fewer than half the answer tokens mapped means the tokenizers differ, and is refused.
- by text (``train.distillation.loss: uld``): the teacher's tokens are aligned with the student's by their
  character ends and compared through ULD (:func:`distil.train.losses.uld_loss`), which needs no ids at all.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from distil.errors import TrainError
from distil.train.alignment import answer_with_ends, text_groups
from distil.train.batches import GenerateExamples, answer_limit
from distil.train.cross_tokenizer import rows_by_group

if TYPE_CHECKING:
    from rich.console import Console
    from transformers import PreTrainedTokenizerBase

MIN_MAPPED_SHARE = 0.5  # below this share of answer tokens mapped by id, the tokenizers are taken to differ


def decoded_vocabulary(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Each token's text as the tokenizer decodes it alone -> its id; texts that several ids decode to (byte
    pieces of one character, say) are left out, since a server's token text cannot say which id it was."""
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    counts = Counter(texts)
    return {text: i for i, text in enumerate(texts) if counts[text] == 1}


def teacher_ends(written: list[str], answer_text: str) -> list[int] | None:
    """Where each of the server's written tokens ends in ``answer_text`` (the training answer: a space, then the
    teacher's text stripped), or None when the tokens do not spell that text."""
    spelled = "".join(written)
    if spelled.strip() != answer_text.strip():
        return None
    lead = len(spelled) - len(spelled.lstrip())
    start = len(answer_text) - len(answer_text.lstrip())
    ends, at = [], 0
    for token in written:
        at += len(token)
        ends.append(min(start + max(0, at - lead), len(answer_text.rstrip())))
    return ends


def groups_for(
    examples: GenerateExamples, i: int, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Example i's text-aligned groups: (student tokens [n], server tokens [m]); None when it has no API rows or
    the rows do not spell its answer."""
    if examples.api_tokens[i] is None:
        return None
    ends = teacher_ends([row[0] for row in examples.api_tokens[i]], examples.answer_texts[i])
    if ends is None:
        return None
    ids, student_ends = answer_with_ends(tokenizer, examples.answer_texts[i], answer_limit(max_length))
    if ids != examples.answer_ids[i]:
        raise TrainError("the student's answer tokens changed between tokenising and aligning them")
    return text_groups(student_ends, ends)


def padded(rows: list[list[float]], width: int) -> np.ndarray:
    """Rows of up to ``width`` log-probabilities -> [m, width] float32, -inf (no mass) past each row's end."""
    out = np.full((len(rows), width), -np.inf, dtype=np.float32)
    for j, row in enumerate(rows):
        out[j, : len(row)] = row[:width]
    return out


def attach_api_topk(
    examples: GenerateExamples,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    by_text: bool,
    console: Console | None = None,
) -> None:
    """Give ``examples`` the API teacher's top-k: by text (``uld_*``, ``by_text``) or by id (``topk_ids`` /
    ``topk_logprobs``); see the module docstring."""
    width = max(len(row) for rows in examples.api_tokens if rows for row in rows)
    if by_text:
        attach_by_text(examples, tokenizer, max_length, width)
        what = "by text (ULD)"
        covered = sum(int((g >= 0).sum()) for g in examples.uld_groups)
    else:
        covered = attach_by_id(examples, tokenizer, max_length, width)
        what = "by id"
    total = sum(len(a) for a in examples.answer_ids)
    if console is not None:
        console.print(f"API teacher's top-{width}: {covered:,} of {total:,} answer tokens matched {what}")


def attach_by_text(examples: GenerateExamples, tokenizer: PreTrainedTokenizerBase, max_length: int, width: int) -> None:
    examples.uld_groups, examples.uld_teacher_logprobs, examples.uld_teacher_chain = [], [], []
    for i, answer in enumerate(examples.answer_ids):
        aligned = groups_for(examples, i, tokenizer, max_length)
        if aligned is None:
            groups, rows, chain = np.full(len(answer), -1), np.zeros((0, width), np.float32), np.zeros(0, np.float32)
        else:
            groups, teacher_groups = aligned
            logprobs = examples.api_logprobs[i]
            written = np.array([row[0] for row in logprobs], dtype=np.float32)
            top = -np.sort(-padded(logprobs, width), axis=1)  # most likely first, as ULD compares them
            rows, chain = rows_by_group(top, written, teacher_groups)
        examples.uld_groups.append(groups)
        examples.uld_teacher_logprobs.append(rows)
        examples.uld_teacher_chain.append(chain)


def attach_by_id(examples: GenerateExamples, tokenizer: PreTrainedTokenizerBase, max_length: int, width: int) -> int:
    """Fill ``topk_ids`` / ``topk_logprobs`` (one-hot on the text's token where nothing maps); returns how many
    answer tokens took the teacher's row, refusing when under ``MIN_MAPPED_SHARE`` of those it sent."""
    vocabulary = decoded_vocabulary(tokenizer)
    examples.topk_ids, examples.topk_logprobs = [], []
    mapped = sent = 0
    for i, answer in enumerate(examples.answer_ids):
        ids = np.repeat(np.asarray(answer, dtype=np.int32)[:, None], width, axis=1)  # padding repeats the target
        logprobs = np.full((len(answer), width), -np.inf, dtype=np.float32)
        logprobs[:, 0] = 0.0  # one-hot on the text's token
        aligned = groups_for(examples, i, tokenizer, max_length)
        if aligned is not None:
            groups, teacher_groups = aligned
            sent += len(teacher_groups)
            for p, g in enumerate(groups.tolist()):
                one_to_one = g >= 0 and (groups == g).sum() == 1 and (teacher_groups == g).sum() == 1
                if not one_to_one:
                    continue
                j = int(np.flatnonzero(teacher_groups == g)[0])
                row = examples.api_tokens[i][j]
                if vocabulary.get(row[0]) != answer[p]:
                    continue
                keep = [
                    (vocabulary[t], lp)
                    for t, lp in zip(row, examples.api_logprobs[i][j], strict=True)
                    if t in vocabulary
                ]
                ids[p, : len(keep)] = [t for t, _ in keep]
                logprobs[p, :] = -np.inf
                logprobs[p, : len(keep)] = [lp for _, lp in keep]
                mapped += 1
        examples.topk_ids.append(ids)
        examples.topk_logprobs.append(logprobs)
    if sent and mapped < MIN_MAPPED_SHARE * sent:
        raise TrainError(
            f"the API teacher's tokens are not the student's: {mapped:,} of {sent:,} answer tokens map to the "
            "student's vocabulary",
            hint="set train.distillation.loss: uld to compare them by text, or use a student with the teacher's "
            "tokenizer",
        )
    return mapped
