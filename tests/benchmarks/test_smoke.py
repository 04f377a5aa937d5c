"""Each CPU benchmark script runs end to end at its tiny size and leaves docs/benchmarks.md alone."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
DOC = BENCH.parent / "docs" / "benchmarks.md"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def doc_untouched():
    before = DOC.read_bytes() if DOC.exists() else None
    yield
    # other benchmarks may rewrite their own sections meanwhile; ours must not appear from a smoke run
    after = DOC.read_bytes() if DOC.exists() else None
    assert before == after or b"--size tiny" not in (after or b"")


def test_hinton_digits_tiny(doc_untouched, capsys):
    result = load("hinton_digits").main(["--size", "tiny", "--no-write"])
    printed = capsys.readouterr().out
    assert "Temperature × α sweep" in printed and "Omitted class" in printed and "Low-label arm" in printed
    assert len(result["teacher"]) == len(result["hard"]) == len(result["dist"]) == 2
    assert all(0 <= e <= 500 for e in result["teacher"] + result["hard"] + result["dist"])
    assert result["chosen"] in {(t, a) for t in (1, 4) for a in (0.5,)}
    for arm in result["extra"]:
        # the bias correction can only move predictions towards the omitted digit
        assert arm["omit_corrected"][1] <= arm["omit_dist"][1]
        assert arm["low_labelled"] == 100


def test_hinton_jitter_shifts_by_at_most_one_pixel():
    import torch

    hinton = load("hinton_digits")
    image = torch.arange(64, dtype=torch.float32).view(1, 64) + 1
    padded = torch.nn.functional.pad(image.view(8, 8), (1, 1, 1, 1))
    shifts = {tuple(padded[dy : dy + 8, dx : dx + 8].reshape(64).tolist()) for dy in range(3) for dx in range(3)}
    seen = {tuple(row.tolist()) for row in hinton.jitter(image.repeat(200, 1), torch.Generator().manual_seed(0))}
    assert seen == shifts  # all nine shifts occur, and nothing else


def test_munge_tiny(doc_untouched, capsys):
    result = load("munge").main(["--size", "tiny", "--no-write"])
    printed = capsys.readouterr().out
    assert "breast_cancer" in printed and "wine" in printed
    for name, runs in result["results"].items():
        for r in runs:
            for arm in ("teacher", "a", "b", "c", "d"):
                assert 0.0 <= r[arm]["acc"] <= 1.0 and r[arm]["logloss"] > 0 and 0.0 <= r[arm]["auc"] <= 1.0
            assert r["size_ratio"] > 1 and r["latency_ratio"] > 0
        assert len(result["verdicts"][name]) == 4
        assert all(set(v) == {"acc", "logloss", "auc"} for v in result["verdicts"][name].values())


def test_divergence_study_tiny(doc_untouched, capsys):
    result = load("divergence_study").main(["--size", "tiny", "--no-write"])
    printed = capsys.readouterr().out
    assert "On-policy λ" in printed
    assert set(result["divergences"]) == {"cross_entropy", "forward_kl", "reverse_kl", "jsd", "skew_forward_kl"}
    assert all(0.0 <= v <= 1.0 for vs in result["divergences"].values() for v in vs)
    # λ = 1 trains on the student's own samples every step, λ = 0 never
    assert result["on_policy_share"][1.0] == [1.0] and result["on_policy_share"][0.0] == [0.0]
    assert all(0.0 <= v <= 1.0 for vs in result["lambdas"].values() for v in vs)
    assert {mode for _, mode in result["fractions"]} == {"label-only", "rationale multitask"}


def test_divergence_task_text_is_right():
    study = load("divergence_study")
    assert study.rationale(59, 23) == "9+3+0=12,5+2+1=08"
    assert study.answer(59, 23) == "082"
    text = study.prompt(59, 23, "R") + study.rationale(59, 23) + "|" + study.answer(59, 23)
    ids = study.encode([text])
    assert ids.shape[1] == study.PROMPT_LEN + study.COMPLETION_LEN
    assert study.decode(ids) == [text]


def test_run_cpu_lists_every_cpu_script():
    run_cpu = load("run_cpu")
    names = [s[0] for s in run_cpu.SCRIPTS]
    for name in ("hinton_digits.py", "munge.py", "divergence_study.py", "train_throughput.py"):
        assert name in names and (BENCH / name).exists()


def test_cross_tokenizer_tiny(doc_untouched, capsys):
    result = load("cross_tokenizer").main(["--size", "tiny", "--no-write"])
    assert "other tokenizer (ULD)" in capsys.readouterr().out
    same, cross = result["arms"]
    assert (same["generate_kd"], cross["generate_kd"]) == ("topk", "uld")
    for arm in (same, cross):
        for role in ("before", "student", "baseline"):
            assert all(0.0 <= arm[role][s] <= 1.0 for s in ("train", "validation"))
