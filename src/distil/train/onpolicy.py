"""On-policy distillation (GKD, Agarwal et al. 2024): the student writes the completions, the teacher scores them.

On each optimiser step, with probability λ (``train.on_policy_lambda``), the student samples a completion
for every prompt of the step; the divergence is then taken on the student's own tokens, with the teacher
scoring those tokens after *its* prompt. λ = 0 is plain supervised KD on the teacher's text, λ = 1 fully
on-policy; GKD found on-policy and mixed beat off-policy on summarisation and arithmetic.

Two pieces, both usable outside the trainer (the divergence benchmark calls them):

- :func:`on_policy_step_uses_student` draws the step's coin from a generator seeded by the step, so every
  process of a DDP run, and a resumed run, draws the same coin for the same step;
- :func:`sample_completions` samples from a causal LM without ``generate`` (which cannot run under DDP's
  wrapper and recompiles for every length): a KV-cached loop over left-padded prompts.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import Tensor


def on_policy_step_uses_student(lam: float, rng: random.Random) -> bool:
    """True with probability ``lam``: this step trains on student samples instead of the teacher's text."""
    if lam <= 0.0:
        return False
    if lam >= 1.0:
        return True
    return rng.random() < lam


def step_rng(seed: int, step: int) -> random.Random:
    """The coin for optimiser step ``step``: the same on every process and after a resume."""
    return random.Random(seed * 1_000_003 + step)


@torch.no_grad()
def sample_completions(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample up to ``max_new_tokens`` tokens after each prompt.

    input_ids, attention_mask: [B, P], prompts *left*-padded (so every prompt ends at column P-1).
    temperature 0 decodes greedily. Returns (completion_ids [B, T], completion_mask [B, T]) with T ≤
    max_new_tokens: the mask is 1 up to and including the first ``eos_token_id`` of a row, 0 after it
    (those ids are then ``eos_token_id``, or 0 when there is none).
    """
    was_training = model.training
    model.eval()
    batch = input_ids.shape[0]
    device = input_ids.device
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    mask = attention_mask.long()
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True)
    past = out.past_key_values
    logits = out.logits[:, -1, :]
    next_position = position_ids[:, -1:] + 1
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    fill = eos_token_id if eos_token_id is not None else 0
    tokens, keep = [], []
    for _ in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            token = logits.argmax(-1)
        token = torch.where(alive, token, torch.full_like(token, fill))
        tokens.append(token)
        keep.append(alive.clone())
        if eos_token_id is not None:
            alive = alive & (token != eos_token_id)
        if not bool(alive.any()):
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=-1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_position, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    if was_training:
        model.train()
    if not tokens:
        empty = torch.zeros((batch, 0), dtype=torch.long, device=device)
        return empty, empty.clone()
    return torch.stack(tokens, dim=1), torch.stack(keep, dim=1).long()


def left_pad(sequences: list[list[int]], pad_id: int, device: Any = None) -> tuple[Tensor, Tensor]:
    """Left-padded ids and attention mask [B, P] for prompts of different lengths."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def trim_completions(completion_ids: Tensor, completion_mask: Tensor) -> list[list[int]]:
    """Each row's kept tokens (through its first EOS) as a list; an empty sample keeps nothing."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(completion_ids.cpu(), completion_mask.cpu(), strict=True)]


def on_policy_loss(
    student: Any,
    teacher: Any,
    student_prompts: list[list[int]],
    teacher_prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    cfg: Any,
    num_items: float,
) -> tuple[Tensor, int]:
    """Divergence ``cfg.loss`` between student and teacher on the student's own completions, per token.

    The student reads its prompt + completion, the teacher its own prompt + the same completion; only the
    completion positions reach either vocabulary projection, chunk by chunk (``cfg.chunk_size``), so no
    [batch, seq, vocab] tensor exists. Returns (summed loss / ``num_items``, tokens read by the student).
    """
    from distil.train import losses as L
    from distil.train.batches import GenerateExamples, generate_batch
    from distil.train.students import base_and_head

    rows = list(range(len(completions)))
    device = next(student.parameters()).device
    ours = {k: v.to(device) for k, v in generate_batch(GenerateExamples(student_prompts, completions), rows, pad_id, False).items()}
    theirs = {k: v.to(device) for k, v in generate_batch(GenerateExamples(teacher_prompts, completions), rows, pad_id, False).items()}
    with torch.no_grad():
        t_decoder, t_head = base_and_head(teacher)
        t_hidden = t_decoder(input_ids=theirs["input_ids"], attention_mask=theirs["attention_mask"]).last_hidden_state
        t_selected = t_hidden[theirs["targets"] != -100]  # [N, Ht], the same N positions in the same order
    decoder, head = base_and_head(student)
    hidden = decoder(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"]).last_hidden_state
    selected = hidden[ours["targets"] != -100]  # [N, H]
    chunk = L.summed_divergence_chunk(lambda a, b: t_selected[a:b] @ t_head.T, kind=cfg.loss, temperature=cfg.temperature,
                                      beta=cfg.beta, alpha=cfg.skew_alpha)
    return L.chunked_head_loss(selected, head, chunk, cfg.chunk_size) / num_items, int(ours["attention_mask"].sum())
