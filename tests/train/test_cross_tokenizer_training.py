"""A tiny teacher (byte-level BPE) distils into a tiny student with another tokenizer (SentencePiece-style
Metaspace BPE): `distil plan` offers ULD instead of refusing, the teacher's cache is built over its own tokens,
the student's agreement counted in the teacher's tokens rises, and the ULD term is what brings its sorted
distributions close to the teacher's: the hard-label baseline, trained the same way, ends further away."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.spec.io import load_project
from distil.train import losses as L
from distil.train import trainer as T
from distil.train.batches import curated_splits, generate_batch, generate_examples
from distil.train.cross_tokenizer import attach_aligned_teacher
from distil.train.heads import base_and_head
from distil.train.plan import estimate, require_fits
from distil.train.students import load_predictor
from distil.train.token_agreement import agreement_in_teacher_tokens, teacher_forced_agreement
from tests.conftest import ASSETS
from tests.train.conftest import generate_records, write_curated, write_spec

torch.set_num_threads(1)
TINY_METASPACE = ASSETS / "tiny-metaspace"
K = 16


def metaspace_student() -> dict:
    return {
        "config": {
            "model_type": "llama",
            "tokenizer": str(TINY_METASPACE),
            "vocab_size": 297,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            "tie_word_embeddings": True,
        }
    }


@pytest.fixture
def cross_project(tmp_path, tiny_teacher_dir):
    spec = write_spec(
        tmp_path / "x",
        tiny_teacher_dir,
        kind="generate",
        train={"epochs": 10, "topk_cache_k": K, "alpha": 0.3, "lr": 5e-3, "keep": "last"},
        student=metaspace_student(),
    )
    write_curated(spec, generate_records(24), generate_records(6, seed=1))
    return spec


@torch.no_grad()
def mean_uld(model, examples) -> float:
    """The ULD term per aligned group over ``examples``, the student's logits against the teacher's rows."""
    decoder, head = base_and_head(model)
    total = groups = 0.0
    for i in range(len(examples.answer_ids)):
        batch = generate_batch(examples, [i], 0, with_topk=True)
        keep = batch["targets"] != -100
        logits = head(decoder(input_ids=batch["input_ids"]).last_hidden_state[keep])
        n = int(len(np.unique(batch["uld_groups"][batch["uld_groups"] >= 0])))
        total += float(
            L.uld_loss(
                logits,
                batch["targets"][keep],
                batch["uld_groups"],
                batch["uld_teacher_logprobs"],
                batch["uld_teacher_chain"],
                num_items=1.0,
            )
        )
        groups += n
    return total / groups


def test_plan_offers_uld_when_tokenizers_differ_and_refuses_only_on_policy(cross_project, tmp_path, tiny_teacher_dir):
    plan = estimate(load_project(cross_project), device="cpu", available_bytes=64 * 2**30)
    assert plan.refusals == []
    assert any("tokenizers differ" in n and "uld" in n for n in plan.notes)
    require_fits(plan)  # no refusal
    on_policy = write_spec(
        tmp_path / "op",
        tiny_teacher_dir,
        kind="generate",
        train={"alpha": 0.5, "on_policy": {"fraction": 0.5}},
        student=metaspace_student(),
    )
    write_curated(on_policy, generate_records(4), generate_records(2, seed=1))
    refused = estimate(load_project(on_policy), device="cpu", available_bytes=64 * 2**30)
    from distil.errors import TrainError

    with pytest.raises(TrainError, match="on-policy"):
        require_fits(refused)


def test_student_with_another_tokenizer_learns_from_the_teacher_through_uld(cross_project, tiny_teacher_dir):
    from transformers import AutoTokenizer

    project = load_project(cross_project)
    data = curated_splits(project)
    inputs = [r.input for r in data.splits["train"]]
    texts = [r.teacher_text for r in data.splits["train"]]
    teacher_tok = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))

    from distil.train.students import build_student

    untrained = build_student(project.spec.student, tiny_teacher_dir, seed=project.spec.train.seed)
    before = agreement_in_teacher_tokens(untrained.model, untrained.tokenizer, teacher_tok, inputs, texts, 64)

    run_id = T.train_run(project).run_id
    caches = list((project.state_dir / "cache" / "topk").iterdir())
    assert len(caches) == 1 and json.loads((caches[0] / "index.json").read_text())["k"] == K
    assert json.loads((project.runs_dir / run_id / "train_config.json").read_text())["generate_kd"] == "uld"

    student = load_predictor(project.runs_dir / run_id / "student")
    baseline = load_predictor(project.runs_dir / run_id / "baseline")
    assert student.tokenizer.convert_ids_to_tokens(student.tokenizer("refund").input_ids)[0].startswith("▁")
    after = agreement_in_teacher_tokens(student.model, student.tokenizer, teacher_tok, inputs, texts, 64)
    assert after.mean() > before.mean() + 0.2, (before.mean(), after.mean())

    examples = generate_examples(data.splits["train"], student.tokenizer, 64)
    attach_aligned_teacher(project, project.spec.teacher().source, examples, K, student.tokenizer)
    assert examples.has_aligned and sum(len(c) for c in examples.uld_teacher_chain) > 0
    distilled, hard_labels = mean_uld(student.model, examples), mean_uld(baseline.model, examples)
    assert distilled < 0.7 * hard_labels, (distilled, hard_labels)


def test_agreement_in_teacher_tokens_is_token_agreement_when_the_tokenizers_match(tiny_teacher_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    inputs, texts = ["note 1: refund crash", "note 2: login"], ["refund sent today", "reset your password"]
    same = agreement_in_teacher_tokens(model, tok, tok, inputs, texts, 64)
    np.testing.assert_allclose(same, teacher_forced_agreement(model, tok, inputs, texts, 64))
