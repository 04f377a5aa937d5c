"""Generate tasks (offline top-k cache, chunked loss), the preflight plan, the tokenizer-mismatch refusal, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.errors import TrainError
from distil.spec.io import load_project
from distil.train import trainer as T
from distil.train.logit_cache import TopkCache
from distil.train.plan import estimate, require_fits
from distil.train.students import load_predictor

torch.set_num_threads(1)


def test_generate_run_builds_the_teacher_cache_and_trains(generate_project):
    project = load_project(generate_project)
    run_id = T.train_run(project, baseline=False).run_id
    caches = list((project.state_dir / "cache" / "topk").iterdir())
    assert len(caches) == 1
    cache = TopkCache.open(caches[0])
    index = json.loads((caches[0] / "index.json").read_text())
    assert cache.k == 8 and cache.format == 2 and index["vocab"] == 512
    assert index["bytes_per_token"] == cache.bytes_per_token == 16  # 8 ids of 512: 64 bits, levels 28, header 29
    assert index["tokens"] == cache.tokens == cache.arrays["rows"].shape[0] and 0 <= index["kl_mean"] <= 0.01
    ids, logprobs = cache.example(0)
    assert ids.dtype == np.int32 and logprobs.dtype == np.float32 and ids.shape == (cache.offsets[1], 8)
    assert (np.diff(logprobs, axis=1) <= 0).all()  # sorted, most likely first
    predictor = load_predictor(project.runs_dir / run_id / "student")
    answers = predictor.generate(["note 1: refund crash"], max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)
    # teacher-forced token agreement against the model's own forward logits, position by position
    from distil.data.records import Record
    from distil.train.batches import generate_examples
    from distil.train.token_agreement import teacher_forced_agreement

    inputs, texts = ["note 1: refund crash", "note 2: login"], ["refund sent today", "reset your password"]
    shares = teacher_forced_agreement(predictor.model, predictor.tokenizer, inputs, texts, predictor.task["max_length"])
    examples = generate_examples(
        [Record(input=x, source="seed", teacher_text=t) for x, t in zip(inputs, texts, strict=True)],
        predictor.tokenizer,
        predictor.task["max_length"],
    )
    for share, prompt, answer in zip(shares, examples.prompt_ids, examples.answer_ids, strict=True):
        with torch.no_grad():
            logits = predictor.model(input_ids=torch.tensor([prompt + answer])).logits[0]
        greedy = logits[len(prompt) - 1 : len(prompt) - 1 + len(answer)].argmax(-1).tolist()
        assert share == pytest.approx(np.mean([g == a for g, a in zip(greedy, answer, strict=True)]))
    assert shares.shape == (2,)
    metrics = json.loads((project.runs_dir / run_id / "metrics.json").read_text())
    assert 0.0 <= metrics["student"]["best_validation_fidelity"] <= 1.0


def test_tokenizer_mismatch_trains_through_uld_and_refuses_on_policy(tmp_path, tiny_teacher_dir):
    from tests.conftest import build_tiny_causal_lm
    from tests.train.conftest import generate_records, write_curated, write_spec

    other = build_tiny_causal_lm(tmp_path / "other", layers=1, hidden=32, seed=1)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(other))
    tok.add_tokens(["zzqq", "qqzz"])  # a different vocabulary
    tok.save_pretrained(other)
    student = {"path": str(other)}
    spec = write_spec(
        tmp_path / "p", tiny_teacher_dir, kind="generate", train={"epochs": 1, "alpha": 0.5}, student=student
    )
    write_curated(spec, generate_records(8), generate_records(2, seed=1))
    project = load_project(spec)
    plan = estimate(project, device="cpu")
    assert any("tokenizers differ" in n and "uld" in n for n in plan.notes) and not plan.refusals
    assert T.train_run(project, baseline=False).finished  # token-level KD through text-aligned ULD
    on_policy = write_spec(
        tmp_path / "o",
        tiny_teacher_dir,
        kind="generate",
        train={"epochs": 1, "alpha": 0.5, "on_policy": {"fraction": 0.5}},
        student=student,
    )
    write_curated(on_policy, generate_records(8), generate_records(2, seed=1))
    with pytest.raises(TrainError, match="tokenizers differ"):
        T.train_run(load_project(on_policy), baseline=False)
    with pytest.raises(TrainError, match="tokenizers differ"):
        require_fits(estimate(load_project(on_policy), device="cpu"))
    seq_spec = write_spec(
        tmp_path / "q", tiny_teacher_dir, kind="generate", train={"epochs": 1, "alpha": 1.0}, student=student
    )
    write_curated(seq_spec, generate_records(8), generate_records(2, seed=1))
    assert T.train_run(load_project(seq_spec), baseline=False).finished


def test_plan_estimates_and_refuses_with_advice(classify_project):
    project = load_project(classify_project)
    plan = estimate(project, device="cpu", available_bytes=64 * 2**30)
    assert plan.fits and plan.peak_bytes > plan.memory["student weights"] > 0 and plan.train_tokens > 0
    tight = estimate(project, device="cpu", available_bytes=1000)
    assert not tight.fits and any("batch 2" in a for a in tight.advice)
    with pytest.raises(TrainError, match="needs about"):
        require_fits(tight)


def test_cli_plan_and_train(classify_project):
    from distil.cli import main

    assert main(["plan", "--spec", str(classify_project)]) == 0
    assert main(["plan", "--spec", str(classify_project), "--memory-gib", "0.000001"]) == 2
    assert main(["train", "--spec", str(classify_project), "--no-baseline", "--as", "dev"]) == 0
    project = load_project(classify_project)
    rows = project.ledger.rows("runs")
    assert [r["role"] for r in rows] == ["student"]
