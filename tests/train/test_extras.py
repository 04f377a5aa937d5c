"""The trainer's optional terms on tiny random models: on-policy GKD (generate), the teacher's own prompt in
the offline cache, feature / relation / rationale KD (classify), bf16 autocast and torch.compile."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from distil.errors import TrainError
from distil.spec.io import load_project
from distil.spec.models import Spec, TrainSpec
from distil.train import losses as L
from distil.train import trainer as T
from distil.train.batches import (
    GenerateExamples,
    classify_examples,
    curated_splits,
    generate_examples,
)
from distil.train.compact_topk import compression_kl
from distil.train.extras import PROJECTOR, rationale_targets, teacher_states_for
from distil.train.logit_cache import TopkCache, teacher_prompt_ids
from distil.train.objectives import ClassifyObjective, generate_loss
from distil.train.onpolicy import on_policy_batch
from distil.train.students import build_student, label_token_ids
from tests.train.conftest import classify_records, generate_records, write_curated, write_spec

torch.set_num_threads(1)


def _generate_project(tmp_path, teacher_dir, **train):  # noqa: ANN001, ANN003
    spec = write_spec(
        tmp_path / "gen", teacher_dir, kind="generate", train={"epochs": 1, "topk_cache_k": 8, "alpha": 0.5, **train}
    )
    write_curated(spec, generate_records(12), generate_records(4, seed=1))
    return load_project(spec)


def test_offline_cache_scores_the_answer_after_the_teachers_own_prompt(tmp_path, tiny_teacher_dir):
    project = _generate_project(tmp_path, tiny_teacher_dir)
    T.train_run(project, baseline=False)
    cache = TopkCache.open(next((project.state_dir / "cache" / "topk").iterdir()))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    examples = generate_examples(curated_splits(project).splits["train"], tokenizer, project.spec.train.max_length)
    teacher = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir)).eval()
    for i in (0, 5):
        ids, logprobs = cache.example(i)
        prompt = teacher_prompt_ids(tokenizer, project.spec.task.instruction, [examples.inputs[i]])[0]
        text = tokenizer.decode(prompt)  # the instruction in the chat template, not the student's bare template
        assert "Summarise: " + examples.inputs[i] in text and "Answer:" not in text
        answer = examples.answer_ids[i]
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([prompt + answer])).logits[
                0, len(prompt) - 1 : len(prompt) + len(answer) - 1
            ]
        top = torch.log_softmax(logits.float(), -1).topk(8, dim=-1)
        assert np.array_equal(np.sort(ids, 1), np.sort(top.indices.numpy(), 1))  # ids kept exactly
        assert compression_kl(top.indices.numpy(), top.values.numpy(), ids, logprobs).max() < 1e-2


def test_on_policy_loss_equals_the_unchunked_divergence_on_the_students_tokens(tiny_teacher_dir):
    from tests.conftest import build_tiny_causal_lm

    teacher = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir)).eval()
    student = AutoModelForCausalLM.from_pretrained(
        str(build_tiny_causal_lm(tiny_teacher_dir.parent / "student-x", layers=2, seed=3))
    )
    cfg = TrainSpec(loss="jsd", beta=0.5, temperature=1.0, chunk_size=3)  # the flat keys of older specs still load
    prompts, teacher_prompts, completions = (
        [[5, 6, 7], [8, 9]],
        [[1, 2, 5, 6, 7], [1, 8, 9, 4]],
        [[10, 11, 12, 2], [13, 2]],
    )
    batch = on_policy_batch(prompts, teacher_prompts, completions, pad_id=0)
    loss, _ = generate_loss(student, batch, cfg, num_items=6.0, teacher=teacher)
    loss.backward()
    chunked_grad = student.model.embed_tokens.weight.grad.clone()
    student.zero_grad()
    total = 0.0
    for p, tp, c in zip(prompts, teacher_prompts, completions, strict=True):
        s_logits = student(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : len(p) + len(c) - 1]
        with torch.no_grad():
            t_logits = teacher(input_ids=torch.tensor([tp + c])).logits[0, len(tp) - 1 : len(tp) + len(c) - 1]
        total = total + L.divergence(s_logits, t_logits, "jsd", beta=0.5).sum()
    reference = total / 6.0
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-4)
    torch.testing.assert_close(chunked_grad, student.model.embed_tokens.weight.grad, rtol=1e-3, atol=1e-6)


def test_on_policy_run_mixes_student_samples_by_lambda(tmp_path, tiny_teacher_dir):
    project = _generate_project(tmp_path, tiny_teacher_dir, on_policy={"fraction": 0.5, "max_new_tokens": 4}, epochs=4)
    run_id = T.train_run(project, baseline=False).run_id
    curve = json.loads((project.runs_dir / run_id / "curve.json").read_text())["student"]
    flags = [p["on_policy"] for p in curve]
    assert len(flags) == 12 and any(flags) and not all(flags)  # λ = 0.5 over 12 steps: both kinds of step
    assert all(np.isfinite(p["loss"]) for p in curve)
    # the same seed draws the same steps again
    again = T.train_run(project, baseline=False).run_id
    assert [
        p["on_policy"] for p in json.loads((project.runs_dir / again / "curve.json").read_text())["student"]
    ] == flags


def _classify_project(tmp_path, teacher_dir, rationale: bool = False, **train):  # noqa: ANN001, ANN003
    spec = write_spec(tmp_path / "cls", teacher_dir, train=train)
    records = classify_records(16)
    if rationale:
        for r in records[::2]:
            r.rationale = f"it mentions {r.input.split()[-1]}"
    write_curated(spec, records, classify_records(6, seed=1))
    return load_project(spec)


def test_feature_and_relation_terms_train_and_the_saved_folder_stays_plain(tmp_path, tiny_teacher_dir):
    project = _classify_project(
        tmp_path, tiny_teacher_dir, feature_weight=1.0, relation_weight=1.0, feature_layers={1: 2, 2: 4}
    )
    run_id = T.train_run(project, baseline=False).run_id
    assert len(list((project.state_dir / "cache" / "states").glob("*.npy"))) == 1
    states = np.load(next((project.state_dir / "cache" / "states").glob("*.npy")))
    assert states.shape == (16, 3, 64) and states.dtype == np.float16  # two mapped layers + the last
    folder = project.runs_dir / run_id / "student"
    model, info = AutoModelForCausalLM.from_pretrained(str(folder), output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert not any(PROJECTOR in k for k in model.state_dict())


def test_feature_relation_and_rationale_terms_add_to_the_loss(tmp_path, tiny_teacher_dir):
    project = _classify_project(tmp_path, tiny_teacher_dir, rationale=True)
    spec = project.spec
    build = build_student(spec.student, T.teacher_folder(spec))
    examples = classify_examples(curated_splits(project).splits["train"], spec.task.label_names)
    labels = torch.tensor(label_token_ids(build.tokenizer, spec.task.label_names))
    rows = [0, 1, 2, 3]

    def loss_with(**groups):  # noqa: ANN003
        data = spec.model_dump()
        data["data"]["rationales"] = True
        data["train"].update(groups)
        weighted = dataclasses.replace(project, spec=Spec.model_validate(data))
        objective = ClassifyObjective(
            "student",
            examples,
            None,
            labels,
            build.tokenizer,
            weighted.spec.train,
            kd=True,
            teacher_states=teacher_states_for(weighted, build, examples, console=None),
            rationale=rationale_targets(weighted, build.tokenizer, examples, console=None),
        )
        model = copy.deepcopy(build.model)
        torch.manual_seed(0)
        objective.prepare_model(model)
        batch = objective.batch(rows, rows)
        return objective.loss(model, batch, 4.0)[0].item()

    plain = loss_with()
    assert loss_with(features={"weight": 1.0}) > plain
    assert loss_with(features={"relation_weight": 1.0}) > plain
    with_rationale = loss_with(distillation={"rationale_weight": 1.0})
    assert with_rationale > plain + 1.0  # a random model's cross-entropy on the rationale tokens is large


def test_a_layer_map_out_of_range_names_the_field(tmp_path, tiny_teacher_dir):
    project = _classify_project(tmp_path, tiny_teacher_dir, feature_weight=1.0, feature_layers={9: 2})
    with pytest.raises(TrainError, match="train.features.layers"):
        T.train_run(project, baseline=False)


def test_bf16_autocast_and_compiled_decoder_train(tmp_path, tiny_teacher_dir, monkeypatch):
    monkeypatch.setenv("DISTIL_COMPILE_BACKEND", "eager")  # the compile path without a C++ toolchain
    project = _classify_project(tmp_path, tiny_teacher_dir, precision="bf16", compile=True, epochs=1)
    run_id = T.train_run(project, baseline=False).run_id
    metrics = json.loads((project.runs_dir / run_id / "metrics.json").read_text())
    assert np.isfinite(metrics["student"]["final_train_loss"])
    model = AutoModelForCausalLM.from_pretrained(str(project.runs_dir / run_id / "student"))
    assert model.dtype == torch.float32  # weights stay fp32 under autocast


def test_generate_examples_keep_a_records_topk_only_when_it_scored_these_tokens(tiny_teacher_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    records = generate_records(2)
    answer = tokenizer(" " + records[0].teacher_text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    records[0].topk_ids = [[t, 1] for t in answer]  # its greedy path is exactly the answer
    records[0].topk_logprobs = [[-0.1, -3.0] for _ in answer]
    records[1].topk_ids = [[7, 1] for _ in range(20)]  # scored other tokens (e.g. without the leading space)
    records[1].topk_logprobs = [[-0.1, -3.0] for _ in range(20)]
    examples = generate_examples(records, tokenizer, 64)
    assert examples.topk_ids[0] is not None and examples.topk_ids[1] is None
    assert isinstance(examples, GenerateExamples)
