"""Teacher-forced token agreement: how much of the teacher's own answer a generate model reproduces.

For each input, the model reads its prompt and the teacher's answer tokens so far; at every answer
position its greedy next token is compared with the teacher's. The share that match is a graded
fidelity that does not depend on where a free-running generation first drifts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from distil.data.records import Record
from distil.train.batches import generate_batch, generate_examples
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
