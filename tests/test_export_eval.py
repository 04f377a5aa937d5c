"""A quantized classify export is scored on its own on the test split and on the gold set: agreement with the
teacher's answers the round's evaluation recorded there, accuracy against the hand labels, each k of n with its
Wilson interval; without a recorded gold set the variant is scored on the test split alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.cli import main
from distil.data.records import Record
from distil.evaluate.metrics import wilson_interval
from distil.evaluate.predictions import prediction_rows, write_predictions
from distil.export import INT8_FILE, OnnxClassifier, export_run
from distil.runs import RunDir
from distil.spec.io import load_project
from distil.train.students import load_predictor
from tests.serve.conftest import LABELS, make_classify_project, write_curated


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def project(tmp_path, tiny_teacher_dir):
    project = load_project(make_classify_project(tmp_path, tiny_teacher_dir))
    texts = [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][:60]
    write_curated(project, texts, np.random.default_rng(0).dirichlet(np.ones(3), size=len(texts)))
    return project


def record_gold_answers(project, n: int = 30) -> tuple[list[Record], np.ndarray]:
    """The gold items and the teacher's answers on them, as `distil evaluate` keeps them in predictions.parquet."""
    lines = (project.root / "gold.jsonl").read_text().splitlines()
    items = [json.loads(line) for line in lines[60:]][::3][:n]  # items of every label, none in the curated splits
    gold = [Record(input=i["input"], source="gold", gold_label=i["label"]) for i in items]
    teacher = np.random.default_rng(1).dirichlet(np.ones(3), size=n)
    rows = prediction_rows("gold", gold, "teacher", teacher, LABELS)
    write_predictions(RunDir(project, "r1").predictions, rows)
    return gold, teacher


def expected_gold_block(probs: np.ndarray, gold: list[Record], teacher: np.ndarray) -> dict:
    agreed = int((probs.argmax(1) == teacher.argmax(1)).sum())
    correct = int(sum(LABELS[int(p.argmax())] == r.gold_label for p, r in zip(probs, gold, strict=True)))
    return {
        "n": len(gold),
        "agreement_k": agreed,
        "agreement_ci": list(wilson_interval(agreed, len(gold))),
        "accuracy_k": correct,
        "accuracy_ci": list(wilson_interval(correct, len(gold))),
        "n_labelled": len(gold),
    }


def test_int8_and_q4_0_variants_are_scored_on_the_gold_set_the_round_recorded(project, capsys):
    gold, teacher = record_gold_answers(project)
    inputs = [r.input for r in gold]
    float_probs = load_predictor(project.runs_dir / "r1" / "student").label_distribution(inputs)
    folder = project.state_dir / "exports" / "r1"

    int8 = export_run(project, "r1", "onnx", quantize="int8", threads=1).evaluation
    argv = ["export", "r1", "--format", "gguf", "--quantize", "q4_0", "--spec", str(project.spec_path), "--as", "ops"]
    assert main(argv) == 0
    assert "gold set n=30" in " ".join(capsys.readouterr().out.split())  # the command says where it was scored
    q4_0 = json.loads(RunDir(project, "r1").variant_evaluation("gguf-q4_0").read_text())
    int8_probs = OnnxClassifier(folder / "onnx", INT8_FILE, threads=1).label_distribution(inputs)
    q4_0_probs = load_predictor(folder / "gguf", gguf_file="model.q4_0.gguf").label_distribution(inputs)

    for evaluation, probs in ((int8, int8_probs), (q4_0, q4_0_probs), (q4_0, None)):
        block = evaluation["quantized"]["gold"] if probs is not None else evaluation["distilled"]["gold"]
        probs = float_probs if probs is None else probs  # the GGUF evaluation's float student, on the same items
        expected = expected_gold_block(probs, gold, teacher)
        for key, value in expected.items():
            assert block[key] == (pytest.approx(value) if isinstance(value, list) else value), key
        assert block["agreement"] == pytest.approx(expected["agreement_k"] / len(gold))
        kl = np.mean(np.sum(teacher * (np.log(teacher) - np.log(probs)), axis=1))
        assert block["kl"] == pytest.approx(kl, rel=1e-6)  # the variant's own distributions were scored
        assert block["agreement_with_float"] == pytest.approx(np.mean(probs.argmax(1) == float_probs.argmax(1)))
        assert evaluation["n_gold_set"] == len(gold) and evaluation["n"] == 20  # the test split, scored as before
    rows = {r["variant"]: json.loads(r["summary"]) for r in project.ledger.rows("evaluations")}
    assert rows["gguf-q4_0"]["agreement_gold"] == q4_0["quantized"]["gold"]["agreement"]
    assert rows["quantized"]["n_gold_set"] == len(gold)


def test_without_a_recorded_gold_set_a_variant_is_scored_on_the_test_split_alone(project):
    evaluation = export_run(project, "r1", "gguf", quantize="q8_0").evaluation
    assert "gold" not in evaluation["quantized"] and "n_gold_set" not in evaluation
    test = evaluation["quantized"]
    assert test["n"] == 20 and test["agreement"] == pytest.approx(test["agreement_k"] / 20)
    assert test["agreement_ci"] == pytest.approx(list(wilson_interval(test["agreement_k"], 20)))
