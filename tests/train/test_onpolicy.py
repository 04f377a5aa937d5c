"""On-policy pieces: KV-cached sampling matches transformers' greedy decoding; the step coin is reproducible."""

from __future__ import annotations

import random

import torch
from transformers import AutoModelForCausalLM

from distil.train.onpolicy import (
    left_pad,
    on_policy_step_uses_student,
    sample_completions,
    step_rng,
    trim_completions,
)


def test_greedy_sampling_matches_generate(tiny_teacher_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir)).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22]]
    ids, mask = left_pad(prompts, pad_id=0)
    ours, keep = sample_completions(model, ids, mask, max_new_tokens=6, temperature=0.0)
    reference = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    assert torch.equal(ours, reference[:, ids.shape[1] :])
    assert keep.all()


def test_sampling_stops_each_row_at_eos_and_is_seeded(tiny_teacher_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir)).eval()
    ids, mask = left_pad([[5, 6, 7], [8, 9]], pad_id=0)

    def sample(**kw):  # noqa: ANN003
        return sample_completions(
            model, ids, mask, max_new_tokens=8, temperature=1.0, generator=torch.Generator().manual_seed(1), **kw
        )

    first, _ = sample()
    row = first[0].tolist()
    # pretend the first greedy token of row 0 not seen before it is the end of text
    stop = next(j for j in range(1, len(row)) if row[j] not in row[:j])
    eos = row[stop]
    out, keep = sample(eos_token_id=eos)
    assert keep[0, : stop + 1].all() and keep[0, stop + 1 :].sum() == 0
    assert (out[0, stop + 1 :] == eos).all()
    assert trim_completions(out, keep)[0] == row[: stop + 1]
    a, _ = sample_completions(model, ids, mask, 5, temperature=1.0, generator=torch.Generator().manual_seed(3))
    b, _ = sample_completions(model, ids, mask, 5, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert model.training is False


def test_step_coin_is_reproducible_and_has_rate_lambda():
    assert not on_policy_step_uses_student(0.0, random.Random(0))
    assert on_policy_step_uses_student(1.0, random.Random(0))
    draws = [on_policy_step_uses_student(0.5, step_rng(7, step)) for step in range(2000)]
    assert draws == [on_policy_step_uses_student(0.5, step_rng(7, step)) for step in range(2000)]
    assert 0.45 < sum(draws) / len(draws) < 0.55
