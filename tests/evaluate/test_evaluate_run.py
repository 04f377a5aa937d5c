"""``distil evaluate`` on a tiny run: the evaluation.json contract, the ledger row, latency measured the
same way for all three models, and a changed gate refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distil.errors import GateError
from distil.evaluate.latency import PeakRSS, measure_model, params_in_safetensors, params_of, size_on_disk
from distil.evaluate.run import evaluate_run, read_gold
from distil.spec.io import load_project

from .conftest import numpy_models

CONTRACT = {
    "accuracy",
    "macro_f1",
    "agreement",
    "kl",
    "js",
    "ece",
    "p50_ms",
    "p95_ms",
    "throughput_per_s",
    "params",
    "size_bytes",
    "peak_memory_bytes",
    "slices",
}


def test_evaluation_json_has_the_contract_and_a_ledger_row(run_project):
    prompts: list[str] = []
    path, document = evaluate_run(
        run_project, models=numpy_models(flip_student=0, flip_baseline=3, prompt_log=prompts), threads=1
    )
    assert path == run_project.runs_dir / "run-1" / "evaluation.json"
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == {"teacher", "student", "baseline", "cost", "gate", "labels", "warnings"}
    for name in ("teacher", "student", "baseline"):
        assert CONTRACT <= set(on_disk[name]), name
    # a student identical to the teacher
    assert on_disk["student"]["agreement"] == 1.0 and on_disk["student"]["kl"] == pytest.approx(0.0, abs=1e-9)
    # the baseline flips every third ticket (index % 3 == 1): 8 of 24
    assert on_disk["baseline"]["agreement"] == pytest.approx(16 / 24)
    assert on_disk["baseline"]["kl"] > 0
    assert set(on_disk["student"]["slices"]["tone"]) == {"urgent", "calm"}
    assert on_disk["student"]["slices"]["tone"]["urgent"]["n"] == 6
    # the gold set of the triage example is scored too
    gold = read_gold(run_project)
    assert on_disk["student"]["gold"]["n"] == len(gold) > 0
    # the teacher was timed with its prompt
    assert prompts and all(p.startswith("Ticket: example") for p in prompts)
    checks = {c["name"]: c for c in on_disk["gate"]["checks"]}
    # 24 of 24 agree, but 24 items cannot show agreement ≥ 0.95: the Wilson lower bound is 0.862
    fidelity = checks["fidelity_min"]
    assert fidelity["status"] == "undecided" and not fidelity["passed"] and fidelity["n"] == 24
    assert fidelity["interval"][0] == pytest.approx(0.8620, abs=1e-3) and fidelity["items_needed"] == 73
    # 8 items only the student gets right, none only the baseline: exact McNemar p = 1/256
    assert checks["beat_baseline"]["status"] == "pass" and checks["beat_baseline"]["p_value"] == pytest.approx(1 / 256)
    assert checks["size_max_vs_teacher"]["value"] == pytest.approx(0.3)
    assert on_disk["gate"]["version"] == 1

    rows = run_project.ledger.rows("evaluations")
    assert len(rows) == 1 and rows[0]["run_id"] == "run-1" and rows[0]["path"].endswith("evaluation.json")
    summary = json.loads(rows[0]["summary"])
    assert summary["student"]["agreement"] == 1.0
    assert run_project.ledger.verify(base=run_project.root).ok


def test_agreement_is_the_share_of_items_where_the_student_gives_the_teachers_label(run_project):
    # the student sends the tickets with index % 4 == 1 to another label: 6 of 24, none of them urgent
    # (the urgent ones have index % 4 == 0); the baseline those with index % 3 == 1: 8 of 24, 2 of them urgent
    _, document = evaluate_run(
        run_project, models=numpy_models(flip_student=4, flip_baseline=3), threads=1, requests=20
    )
    student, baseline = document["student"], document["baseline"]
    assert student["agreement"] == pytest.approx(18 / 24) and baseline["agreement"] == pytest.approx(16 / 24)
    assert student["slices"]["tone"]["urgent"]["agreement"] == 1.0
    assert student["slices"]["tone"]["calm"]["agreement"] == pytest.approx(12 / 18)
    assert baseline["slices"]["tone"]["urgent"]["agreement"] == pytest.approx(4 / 6)
    assert (
        student["kl"] > 0 and baseline["kl"] > student["kl"]
    )  # a flipped item is far from the teacher; more flips, more KL


def test_latency_is_measured_for_all_three_models_the_same_way(run_project):
    _, document = evaluate_run(run_project, models=numpy_models(), threads=1, requests=120)
    settings = set()
    for name in ("teacher", "student", "baseline"):
        block = document[name]
        lat = block["latency"]
        # 120 batch-1 calls timed on the gold set's inputs; the gold scores cover all of them
        assert len(lat["samples_ms"]) == lat["requests"] == 120 < len(read_gold(run_project)) == block["gold"]["n"]
        assert lat["warmup"] > 0 and lat["batch_size"] == 32
        assert 0 < block["p50_ms"] <= block["p95_ms"] <= max(lat["samples_ms"])
        assert block["throughput_per_s"] > 0
        assert block["peak_memory_bytes"] >= 0
        settings.add((lat["requests"], lat["warmup"], lat["batch_size"], lat["threads"], lat["memory_method"]))
    assert len(settings) == 1 and next(iter(settings))[3] == 1


def test_measure_model_sees_torch_memory_and_counts_parameters(tmp_path):
    import torch
    from safetensors.torch import save_file

    def load():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 3))
        model.buffer = torch.ones(16_000_000)  # 64 MB held while the model is alive
        return model

    def predict(model, batch):
        with torch.no_grad():
            return torch.softmax(model(torch.randn(len(batch), 64)), -1).numpy()

    measured = measure_model(load, predict, ["a", "b", "c"], threads=1, requests=100)
    assert measured.params == 64 * 32 + 32 + 32 * 3 + 3
    assert measured.peak_memory_bytes >= 50_000_000
    assert measured.timing.threads == 1 and len(measured.timing.samples_ms) == 100
    save_file(
        {k: v.contiguous() for k, v in measured.predictor.state_dict().items()}, str(tmp_path / "model.safetensors")
    )
    assert params_in_safetensors(tmp_path) == measured.params == params_of(measured.predictor)
    assert size_on_disk(tmp_path) == (tmp_path / "model.safetensors").stat().st_size


def test_weights_are_counted_as_served_in_memory_not_as_stored():
    import torch

    from distil.evaluate.latency import weights_in_memory

    model = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 100, bias=False))
    model[1].weight = model[0].weight  # tied: held once
    model.register_buffer("scale", torch.ones(10))
    assert weights_in_memory(model) == (100 * 16 + 10) * 4
    assert weights_in_memory(model.half()) == (100 * 16 + 10) * 2
    holder = type("Predictor", (), {"model": model})()
    assert weights_in_memory(holder) == (100 * 16 + 10) * 2  # a predictor holding the model in .model
    assert weights_in_memory(object()) is None  # an API teacher has no weights here


def test_every_input_is_answered_once_by_the_timed_calls_or_the_batches_after_them():
    import time

    from distil.evaluate.latency import time_predict

    seen: list[list[str]] = []

    def predict(batch):
        seen.append(list(batch))
        return [f"answer to {text}" for text in batch]

    inputs = [f"q{i}" for i in range(7)]
    timing = time_predict(predict, inputs, threads=1, requests=10, warmup=3, batch_size=4)
    assert timing.outputs == [f"answer to {text}" for text in inputs]
    assert timing.requests == len(timing.samples_ms) == 10 and timing.throughput_batches == 3
    assert seen[3:13] == [[f"q{k % 7}"] for k in range(10)]  # after 3 warm-up calls: 10 timed calls, cycling

    seen.clear()
    many = [f"r{i}" for i in range(25)]
    timing = time_predict(predict, many, threads=1, requests=10, warmup=0, batch_size=4, throughput_batches=2)
    assert timing.requests == 10 and timing.outputs == [f"answer to {text}" for text in many]
    assert seen[10:12] == [many[10:14], many[14:18]]  # the throughput batches take the inputs not yet answered
    assert seen[12:] == [many[18:22], many[22:25]]  # the rest, in untimed batches
    assert sum(len(b) for b in seen) == 25  # nothing is asked twice

    def slow(batch):
        time.sleep(0.05 if len(batch) > 1 else 0)
        return list(batch)

    # the next batch would end past the budget at the last one's pace: a slow model gets one batch
    assert time_predict(slow, inputs, threads=1, requests=5, batch_size=4, budget_s=0.08).throughput_batches == 1
    assert time_predict(slow, inputs, threads=1, requests=5, batch_size=4, budget_s=10.0).throughput_batches == 3


def test_peak_rss_tracks_a_numpy_allocation():
    with PeakRSS() as memory:
        block = np.ones(20_000_000)  # 160 MB
        block[::4096] = 2.0
        del block
    assert memory.peak_growth_bytes >= 100_000_000


def test_changed_gate_is_refused(run_project):
    text = run_project.spec_path.read_text().replace("fidelity_min: 0.95", "fidelity_min: 0.5")
    run_project.spec_path.write_text(text)
    changed = load_project(run_project.spec_path)
    with pytest.raises(GateError, match="changed since version 1"):
        evaluate_run(changed, models=numpy_models(), threads=1)
    assert not (changed.runs_dir / "run-1" / "evaluation.json").exists()
    assert changed.ledger.rows("evaluations") == []


def test_gold_tickets_are_tagged_by_the_same_slice_rules_as_every_record(tmp_path, tiny_teacher_dir):
    from tests.data.helpers import make_project

    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}", gold="gold.jsonl")
    rows = [
        {"input": "I know the invoice total is wrong", "label": "billing"},
        {"input": "fix the login now", "label": "account"},
        {"input": "refund please", "label": "billing", "tags": {"tone": "urgent"}},
    ]
    (spec_path.parent / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tones = [r.tags["tone"] for r in read_gold(load_project(spec_path))]
    # "know" holds "now" but is not the word: calm; "now" is; a tag the row carries wins
    assert tones == ["calm", "urgent", "urgent"]
