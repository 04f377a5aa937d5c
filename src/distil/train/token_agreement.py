"""Teacher-forced token agreement: how much of the teacher's own answer a generate model reproduces.

For each input, the model reads its prompt and the teacher's answer tokens so far; at every answer
position its greedy next token is compared with the teacher's. The share that match is a graded
fidelity that does not depend on where a free-running generation first drifts.

When the model's tokenizer differs from the teacher's, :func:`agreement_in_teacher_tokens` counts in the
teacher's tokens instead: the answer is cut into groups that cover the same text on both sides
(:mod:`distil.train.alignment`), and a group's teacher tokens count as reproduced when the model's greedy token
is right at every one of its own positions in the group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from distil.data.records import Record
from distil.train.alignment import answer_with_ends, text_groups
from distil.train.batches import answer_limit, generate_batch, generate_examples
from distil.train.heads import base_and_head

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def teacher_forced_agreement(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: list[str],
    teacher_texts: list[str],
    max_length: int = 256,
    batch_size: int = 8,
) -> np.ndarray:
    """``[n]``: per input, the share of the teacher's answer tokens (tokenised as in training: its text
    after a space, then EOS) that the model's greedy next token reproduces, teacher-forced."""
    records = [
        Record(input=x, source="seed", teacher_text=t or " ") for x, t in zip(inputs, teacher_texts, strict=True)
    ]
    examples = generate_examples(records, tokenizer, max_length)
    decoder, head = base_and_head(model)
    device = next(model.parameters()).device
    shares: list[float] = []
    for start in range(0, len(examples.answer_ids), batch_size):
        rows = list(range(start, min(len(examples.answer_ids), start + batch_size)))
        batch = generate_batch(examples, rows, tokenizer.pad_token_id, with_topk=False)
        hidden = decoder(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).last_hidden_state
        targets = batch["targets"].to(device)
        keep = targets != -100
        hits = (head(hidden).argmax(-1) == targets) & keep  # [B, S]
        shares += (hits.sum(-1) / keep.sum(-1).clamp_min(1)).tolist()
    return np.asarray(shares, dtype=np.float64)


@torch.no_grad()
def agreement_in_teacher_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase,
    inputs: list[str],
    teacher_texts: list[str],
    max_length: int = 256,
) -> np.ndarray:
    """``[n]``: per input, the share of the teacher's answer tokens (its own tokenisation of its text, then EOS)
    whose text the model reproduces teacher-forced: a group of text-aligned tokens counts, with its teacher
    tokens, when the model's greedy next token matches at each of its positions in the group. Teacher tokens
    past the text both sides cover (a side cut shorter) count as not reproduced."""
    records = [
        Record(input=x, source="seed", teacher_text=t or " ") for x, t in zip(inputs, teacher_texts, strict=True)
    ]
    examples = generate_examples(records, tokenizer, max_length)
    decoder, head = base_and_head(model)
    device = next(model.parameters()).device
    shares: list[float] = []
    for i, text in enumerate(examples.answer_texts):
        batch = generate_batch(examples, [i], tokenizer.pad_token_id, with_topk=False)
        hidden = decoder(input_ids=batch["input_ids"].to(device)).last_hidden_state
        targets = batch["targets"].to(device)
        keep = targets != -100
        hits = (head(hidden[keep]).argmax(-1) == targets[keep]).cpu().numpy()  # [n] per model answer token
        _, ends = answer_with_ends(tokenizer, text, answer_limit(max_length))
        _, teacher_ends = answer_with_ends(teacher_tokenizer, text, answer_limit(max_length))
        groups, teacher_groups = text_groups(ends, teacher_ends)
        reproduced = sum(
            int((teacher_groups == g).sum()) for g in range(int(groups.max()) + 1) if hits[groups == g].all()
        )
        shares.append(reproduced / max(len(teacher_groups), 1))
    return np.asarray(shares, dtype=np.float64)
