"""On-policy distillation (GKD, Agarwal et al. 2024): the student writes the completions, the teacher scores them.

On each optimiser step, with probability λ (``train.on_policy.fraction``), the student samples a completion
for every prompt of the step; the divergence is then taken on the student's own tokens, with the teacher
scoring those tokens after *its* prompt. λ = 0 is plain supervised KD on the teacher's text, λ = 1 fully
on-policy; GKD found on-policy and mixed beat off-policy on summarisation and arithmetic.

On-policy distillation is a change to the batch, not to the loss: on a student step the objective
replaces the step's targets with the student's samples (:func:`on_policy_batch`), and the ordinary
generate loss then scores them against the teacher. Two pieces are usable outside the trainer (the
divergence benchmark calls them):

- :func:`on_policy_step_uses_student` draws the step's coin from a generator seeded by the step, so every
  process of a DDP run, and a resumed run, draws the same coin for the same step;
- :func:`sample_completions` samples from a causal LM without ``generate`` (which cannot run under DDP's
  wrapper and recompiles for every length): a KV-cached loop over left-padded prompts.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from distil.train.batches import GenerateExamples, generate_batch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
    model: PreTrainedModel,
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
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=past,
            use_cache=True,
        )
        past = out.past_key_values
        logits = out.logits[:, -1, :]
        next_position = next_position + 1
    if was_training:
        model.train()
    if not tokens:
        empty = torch.zeros((batch, 0), dtype=torch.long, device=device)
        return empty, empty.clone()
    return torch.stack(tokens, dim=1), torch.stack(keep, dim=1).long()


def left_pad(
    sequences: list[list[int]], pad_id: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
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


def student_completions(
    model: PreTrainedModel,
    prompts: list[list[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    eos_id: int | None,
    pad_id: int,
    seed: int,
) -> list[list[int]]:
    """The student's own completion of each prompt (through its first EOS), ``batch_size`` prompts at a time."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], pad_id, device)
        completion, keep = sample_completions(model, ids, mask, max_new_tokens, temperature, eos_id, generator)
        out += trim_completions(completion, keep)
    return out


def on_policy_batch(
    student_prompts: list[list[int]], teacher_prompts: list[list[int]], completions: list[list[int]], pad_id: int
) -> dict[str, Tensor]:
    """A generate batch whose targets are the student's own completions, and the teacher's view of them.

    ``input_ids`` / ``attention_mask`` / ``targets`` [B, S]: the student's prompt + completion;
    ``teacher_input_ids`` / ``teacher_attention_mask`` / ``teacher_targets`` [B, S']: the teacher's own
    prompt + the same completion. Both target masks select the same completion tokens in the same order,
    so the teacher's state at its i-th selected position scores the student's i-th token.
    """
    rows = list(range(len(completions)))
    ours = generate_batch(GenerateExamples(student_prompts, completions), rows, pad_id, with_topk=False)
    theirs = generate_batch(GenerateExamples(teacher_prompts, completions), rows, pad_id, with_topk=False)
    return {**ours, **{f"teacher_{key}": value for key, value in theirs.items()}}
