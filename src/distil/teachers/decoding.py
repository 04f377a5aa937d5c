"""Batched decoding in which a row leaves the batch as soon as it is finished (teachers and students).

``transformers``' ``generate`` keeps every row of a batch in the forward pass until the last one
stops, so a batch of 16 list-style tickets, one of which rambles to the token limit, costs 16 rows
times the limit. Here a finished row's key/value rows are dropped from the cache, so a batch costs
about the sum of its rows' lengths. Sampling uses ``transformers``' own warpers (temperature, top-k
50 as its default, top-p), greedy takes the arg-max; the prompts come left-padded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOP_K = 50  # transformers' default for sampling


@dataclass
class DecodedRow:
    ids: list[int] = field(default_factory=list)
    topk_ids: list[list[int]] = field(default_factory=list)
    topk_logprobs: list[list[float]] = field(default_factory=list)
    chosen_probs: list[float] = field(default_factory=list)


def _warpers(temperature: float, top_p: float, top_k: int):
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if temperature > 0:
        warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
    return warpers


def end_ids(tokenizer: Any) -> set[int]:
    """The ids that end an answer: the tokenizer's end-of-sequence and padding tokens."""
    return {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}


def decode_rows(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    finished: Callable[[list[int]], bool] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = DEFAULT_TOP_K,
    topk: int = 0,
    ends: Collection[int] = (),
) -> list[DecodedRow]:
    """New tokens per row of a left-padded batch ``[B, S]``.

    A row stops at one of the ``ends`` ids (not kept, nor its step's records), when ``finished(its new
    ids)`` is true (the last id is kept), or at ``max_new_tokens``. With ``topk`` each step also records
    the row's ``topk`` most likely ids and their log-probabilities (the model's own distribution,
    before any warper) and the probability of the id taken."""
    import torch
    from transformers import DynamicCache

    rows = [DecodedRow() for _ in range(input_ids.shape[0])]
    if max_new_tokens <= 0 or not rows:
        return rows
    warpers = _warpers(temperature, top_p, top_k)
    active = torch.arange(len(rows))
    mask = attention_mask.clone()
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    last_position = positions[:, -1].clone()
    cache = DynamicCache(config=model.config)  # the model's own layer kinds (sliding windows and the like)
    ids = input_ids
    with torch.inference_mode():
        for step in range(max_new_tokens):
            logits = (
                model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1, :]
                .float()
            )
            if temperature > 0:
                chosen = torch.multinomial(torch.softmax(warpers(ids, logits), dim=-1), 1).squeeze(1)
            else:
                chosen = logits.argmax(dim=-1)
            logprobs = torch.log_softmax(logits, dim=-1) if topk else None
            keep: list[int] = []
            for j, row_index in enumerate(active.tolist()):
                row, token = rows[row_index], int(chosen[j])
                if token in ends:
                    continue
                row.ids.append(token)
                if logprobs is not None:
                    top = torch.topk(logprobs[j], topk)
                    row.topk_ids.append(top.indices.tolist())
                    row.topk_logprobs.append(top.values.tolist())
                    row.chosen_probs.append(float(logprobs[j, chosen[j]].exp()))
                if finished is None or not finished(row.ids):
                    keep.append(j)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(active):  # the finished rows leave the batch and the cache
                active = active[torch.tensor(keep)]
                kept = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(kept)
                mask, chosen, last_position = mask[kept], chosen[kept], last_position[kept]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last_position = last_position + 1
            positions = last_position.unsqueeze(1)
            ids = chosen.unsqueeze(1)
    return rows
