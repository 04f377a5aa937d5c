"""Every kind of student trains on the tiny teacher and its folder loads in plain transformers, with no distil import.

Kinds: a causal LM (teacher-layers), a causal LM with LoRA, an encoder (a tiny BERT whose WordPiece tokenizer
differs from the teacher's BPE), an encoder with LoRA.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from distil.errors import SpecError, TrainError
from distil.spec.io import load_project
from distil.spec.models import StudentSpec
from distil.train import trainer as T
from distil.train.students import build_student, load_predictor

from .conftest import LABELS, classify_records, write_curated, write_spec

torch.set_num_threads(1)

# A fresh interpreter that imports only transformers (and peft, unused: the adapters are merged): it loads the
# folder with the auto class of its kind, asks it one input as distil_task.json says, and prints the label.
PLAIN_LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
folder = sys.argv[1]
task = json.load(open(folder + "/distil_task.json"))
tok = AutoTokenizer.from_pretrained(folder)
text = task["prompt_template"].replace("{input}", "my invoice was charged twice")
ids = tok(text, return_tensors="pt")
if task["student_kind"] == "encoder":
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    logits = model(**ids).logits[0]
    label = model.config.id2label[int(logits.argmax())]
else:
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    logits = model(**ids).logits[0, -1, task["label_token_ids"]]
    label = task["labels"][int(logits.argmax())]
assert "distil" not in sys.modules
print(json.dumps({"label": label, "n": int(logits.numel())}))
"""


def plain_load(folder) -> dict:  # noqa: ANN001
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_LOAD, str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def encoder_student(encoder_dir, lora: bool = False) -> dict:  # noqa: ANN001
    return {"kind": "encoder", "path": str(encoder_dir), "lora": lora}


@pytest.mark.parametrize("kind", ["causal", "causal-lora", "encoder", "encoder-lora"])
def test_every_student_kind_trains_and_loads_in_plain_transformers(kind, tmp_path, tiny_teacher_dir, tiny_encoder_dir):
    student = {
        "causal": {"init": "teacher-layers:2"},
        "causal-lora": {"init": "teacher-layers:2", "lora": True},
        "encoder": encoder_student(tiny_encoder_dir),
        "encoder-lora": encoder_student(tiny_encoder_dir, lora=True),
    }[kind]
    spec = write_spec(tmp_path / "proj", tiny_teacher_dir, student=student, train={"epochs": 1})
    write_curated(spec, classify_records(16), classify_records(6, seed=1))
    project = load_project(spec)
    result = T.train_run(project)
    assert sorted(result.roles) == ["baseline", "student"]
    for role in ("student", "baseline"):
        folder = result.run_dir / role
        task = json.loads((folder / "distil_task.json").read_text())
        assert task["student_kind"] == kind.split("-")[0]
        config = json.loads((folder / "config.json").read_text())
        if kind.startswith("encoder"):  # the baseline has the student's architecture: a head over the labels
            assert config["architectures"] == ["BertForSequenceClassification"]
            assert config["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
        assert not (folder / "adapter_config.json").exists()  # LoRA merged in: a plain folder
        loaded = plain_load(folder)
        assert loaded["label"] in LABELS and loaded["n"] == len(LABELS)
        probs = load_predictor(folder).label_distribution(["refund for my invoice", "the app crash error"])
        assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1)


def test_encoder_lora_trains_adapters_and_the_head_only(tiny_encoder_dir):
    build = build_student(StudentSpec(kind="encoder", path=str(tiny_encoder_dir), lora=True), None, labels=LABELS)
    trainable = [n for n, p in build.model.named_parameters() if p.requires_grad]
    assert any("lora_" in n for n in trainable) and any("classifier" in n for n in trainable)
    assert all("lora_" in n or "classifier" in n for n in trainable)


def test_encoder_head_is_over_the_labels(tiny_encoder_dir):
    build = build_student(StudentSpec(kind="encoder", path=str(tiny_encoder_dir)), None, labels=LABELS)
    assert build.is_encoder and build.model.config.num_labels == 3
    assert build.model.config.label2id == {"billing": 0, "technical": 1, "account": 2}
    with pytest.raises(TrainError, match="no config.json"):
        build_student(StudentSpec(kind="encoder", path=str(tiny_encoder_dir / "missing")), None, labels=LABELS)


def test_encoder_students_are_refused_where_they_cannot_work(tmp_path, tiny_teacher_dir, tiny_encoder_dir):
    generate = write_spec(
        tmp_path / "gen", tiny_teacher_dir, kind="generate", student=encoder_student(tiny_encoder_dir)
    )
    with pytest.raises(SpecError, match="student.kind encoder applies to classify tasks"):
        load_project(generate)
    features = write_spec(
        tmp_path / "feat",
        tiny_teacher_dir,
        student=encoder_student(tiny_encoder_dir),
        train={"features": {"weight": 1.0}},
    )
    with pytest.raises(SpecError, match="train.features"):
        load_project(features)
    with pytest.raises(ValueError, match="an encoder student takes"):
        StudentSpec(kind="encoder", init="teacher-layers:2")
    assert (
        StudentSpec(kind="encoder").init is None
        and StudentSpec(kind="encoder").describe() == "encoder (embedded all-MiniLM-L6-v2)"
    )


def test_encoder_too_short_for_max_length_is_refused(tmp_path, tiny_teacher_dir, tiny_encoder_dir):
    spec = write_spec(
        tmp_path / "proj", tiny_teacher_dir, student=encoder_student(tiny_encoder_dir), train={"max_length": 256}
    )
    write_curated(spec, classify_records(8), classify_records(3, seed=1))
    with pytest.raises(TrainError, match="reads at most 128 tokens"):
        T.train_run(load_project(spec), baseline=False)


def test_plan_says_an_encoder_needs_no_shared_tokenizer(tmp_path, tiny_teacher_dir, tiny_encoder_dir):
    from distil.train.plan import estimate, require_fits

    spec = write_spec(tmp_path / "proj", tiny_teacher_dir, student=encoder_student(tiny_encoder_dir))
    write_curated(spec, classify_records(8), classify_records(3, seed=1))
    plan = estimate(load_project(spec), device="cpu")
    assert any("tokenizers need not match" in note for note in plan.notes)
    require_fits(plan)  # not refused


@pytest.mark.slow
def test_embedded_minilm_student_trains_on_a_handful_of_items(tmp_path, tiny_teacher_dir):
    spec = write_spec(
        tmp_path / "proj", tiny_teacher_dir, student={"kind": "encoder"}, train={"epochs": 1, "max_length": 32}
    )
    write_curated(spec, classify_records(12), classify_records(4, seed=1))
    result = T.train_run(load_project(spec))
    loaded = plain_load(result.run_dir / "student")
    assert loaded["label"] in LABELS
    config = json.loads((result.run_dir / "student" / "config.json").read_text())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
