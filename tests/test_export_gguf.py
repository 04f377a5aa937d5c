"""GGUF export: the file transformers' GGUF loader reads back matches the student; quantized files are evaluated.

Tolerances, on the logits of a tiny random Llama student (hidden 64, 2 layers, logits within about ±1.5):
float32 is exact, float16 within 2e-3, q8_0 within 0.02 (measured 0.008; a layout error moves them 0.01, which the
float32 check catches), q4_0 measured, not bounded tightly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.cli import main
from distil.export import export_run
from distil.export_gguf import GgufExportError, rotary_permute, write_gguf
from distil.spec.io import load_project
from tests.conftest import build_tiny_causal_lm, build_tiny_encoder
from tests.serve.conftest import make_classify_project, write_curated

TEXTS = ["Ticket: my card was charged twice\nCategory:", "Hi, the app crashes on login, please help 123 4567"]
MAX_ABS_LOGIT_DIFF = {"f32": 0.0, "f16": 2e-3, "q8_0": 0.02}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("gguf") / "student", layers=2, hidden=64, seed=1)


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0", "q4_0"])
def test_transformers_reads_the_file_back_and_its_logits_match(student, tmp_path, gguf_type):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    written = write_gguf(student, tmp_path / f"model.{gguf_type}.gguf", gguf_type)
    reference = AutoModelForCausalLM.from_pretrained(str(student), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(student))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=written.path.name, dtype=torch.float32)
    loaded_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=written.path.name)
    assert loaded.config.tie_word_embeddings and loaded.config.num_key_value_heads == 2
    diffs, same_top = [], []
    for text in TEXTS:
        ids = tokenizer(text)["input_ids"]
        assert loaded_tokenizer(text)["input_ids"] == ids  # the vocabulary and merges survive the trip
        a, b = _logits(reference, ids), _logits(loaded.eval(), ids)
        diffs.append(float((a - b).abs().max()))
        same_top.append(float((a.argmax(-1) == b.argmax(-1)).float().mean()))
    if gguf_type in MAX_ABS_LOGIT_DIFF:
        assert max(diffs) <= MAX_ABS_LOGIT_DIFF[gguf_type]
        assert min(same_top) == 1.0
    else:  # q4_0: 4.5 bits per weight is measured here, not assumed close; it must still be a usable model
        assert max(diffs) < 0.5 and np.mean(same_top) >= 0.8
    sizes = {"f32": 4, "f16": 2, "q8_0": 1.0625, "q4_0": 0.5625}  # bytes per 2-D weight value
    params = sum(p.numel() for p in reference.parameters())
    assert written.size_bytes < params * sizes[gguf_type] * 1.3 + 64_000  # + the vocabulary and header


def test_rotary_permute_is_the_inverse_of_the_readers():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(8 * 4 * 3, dtype=np.float32).reshape(8 * 4, 3)
    undo = LlamaTensorProcessor(config={})._reverse_permute_weights(rotary_permute(w, 8), 8, 8)
    assert not np.array_equal(rotary_permute(w, 8), w) and np.array_equal(undo, w)


def test_non_llama_students_are_refused(tmp_path):
    encoder = build_tiny_encoder(tmp_path / "enc")
    with pytest.raises(GgufExportError, match="Llama-architecture"):
        write_gguf(encoder, tmp_path / "x.gguf", "q8_0")
    with pytest.raises(GgufExportError, match="--quantize"):
        write_gguf(encoder, tmp_path / "x.gguf", "q5_k")


@pytest.fixture
def project_with_data(tmp_path, tiny_teacher_dir):
    project = load_project(make_classify_project(tmp_path, tiny_teacher_dir))
    texts = [json.loads(line)["input"] for line in (project.root / "gold.jsonl").read_text().splitlines()][:90]
    write_curated(project, texts, np.random.default_rng(0).dirichlet(np.ones(3), size=len(texts)))
    return project


def test_gguf_export_is_checked_and_each_quantized_type_is_recorded_as_its_own_variant(project_with_data, capsys):
    from distil.data.records import read_records
    from distil.train.students import load_predictor

    project = project_with_data
    plain = export_run(project, "r1", "gguf")
    assert plain.checks["gguf_vs_pytorch"]["agreement_with_float"] == 1.0 and plain.checks["n"] == 30
    assert plain.checks["gguf_vs_pytorch"]["max_abs_prob_diff"] < 1e-5
    assert project.ledger.rows("evaluations") == []  # float32 is the student itself: checked, not a variant

    for gguf_type in ("q8_0", "q4_0"):
        argv = ["export", "r1", "--format", "gguf", "--quantize", gguf_type, "--spec", str(project.spec_path)]
        assert main([*argv, "--as", "ops"]) == 0
        assert f"gguf-{gguf_type}" in capsys.readouterr().out
    rows = {r["variant"]: r for r in project.ledger.rows("evaluations")}
    assert set(rows) == {"gguf-q8_0", "gguf-q4_0"}
    folder = project.state_dir / "exports" / "r1" / "gguf"
    test = read_records(project.data_dir / "curated" / "abcdef012345" / "test.parquet")
    teacher = np.array([r.label_probs for r in test])
    float_probs = load_predictor(project.runs_dir / "r1" / "student").label_distribution([r.input for r in test])
    for gguf_type, row in ((t, rows[f"gguf-{t}"]) for t in ("q8_0", "q4_0")):
        evaluation = json.loads((project.root / row["path"]).read_text())
        evaluated = project.root / evaluation["model"]
        assert evaluated.read_bytes() == (folder / f"model.{gguf_type}.gguf").read_bytes()
        assert evaluation["quantized"]["size_bytes"] == evaluated.stat().st_size
        # its numbers are its own: the file read back, scored against the teacher here
        probs = load_predictor(folder, gguf_file=f"model.{gguf_type}.gguf").label_distribution([r.input for r in test])
        assert evaluation["quantized"]["agreement"] == pytest.approx(np.mean(probs.argmax(1) == teacher.argmax(1)))
        largest = np.max(np.abs(probs - float_probs))
        assert evaluation["quantized"]["max_abs_prob_diff"] == pytest.approx(largest, rel=1e-6) and largest > 0
    q8 = json.loads((project.root / rows["gguf-q8_0"]["path"]).read_text())["quantized"]
    q4 = json.loads((project.root / rows["gguf-q4_0"]["path"]).read_text())["quantized"]
    assert q4["size_bytes"] < q8["size_bytes"] < (folder / "model.f32.gguf").stat().st_size
    assert q8["agreement_with_float"] >= 0.95
    assert project.ledger.verify(base=project.root).ok
    # the report shows each GGUF variant beside the distilled student
    from distil.evaluate.report import quantized_section
    from distil.runs import RunDir

    section = quantized_section(project, RunDir(project, "r1"), "gguf-q4_0")
    assert [name for name, _ in section["rows"]] == ["distilled", "gguf-q4_0"]
    assert section["size_ratio"] == pytest.approx(
        evaluation_of(project, rows["gguf-q4_0"])["distilled"]["size_bytes"] / q4["size_bytes"]
    )


def evaluation_of(project, row) -> dict:
    return json.loads((project.root / row["path"]).read_text())


def test_export_refuses_quantizations_a_format_does_not_have(project_with_data):
    from distil.export import ExportError

    with pytest.raises(ExportError, match="--format gguf takes one of f16, q8_0, q4_0"):
        export_run(project_with_data, "r1", "gguf", "int8")
    with pytest.raises(ExportError, match="--format onnx takes one of int8"):
        export_run(project_with_data, "r1", "onnx", "q8_0")
