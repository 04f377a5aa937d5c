"""The trainer on tiny random models: a real SQLite ledger, real Parquet shards, real folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distil.errors import DataError, RunError, TrainError
from distil.spec.io import load_project
from distil.spec.models import TrainSpec
from distil.train import trainer as T
from distil.train.batches import classify_batch, classify_examples, curated_splits
from distil.train.loop import lr_lambda, step_rows
from distil.train.objectives import ClassifyObjective
from distil.train.students import build_student, label_token_ids, load_predictor

torch.set_num_threads(1)


def _student_objective(project, build, examples, cfg) -> ClassifyObjective:  # noqa: ANN001
    labels = torch.tensor(label_token_ids(build.tokenizer, project.spec.task.label_names))
    return ClassifyObjective("student", examples, None, labels, build.tokenizer, cfg, kd=True)


def test_classify_run_writes_student_baseline_and_ledger_rows(classify_project):
    project = load_project(classify_project)
    run_id = T.train_run(project).run_id
    run_dir = project.runs_dir / run_id
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["student"]["steps"] == metrics["baseline"]["steps"] == 12  # 24 examples / batch 4 × 2 epochs
    assert (
        metrics["student"]["final_train_loss"] is not None
        and metrics["baseline"]["best_validation_fidelity"] is not None
    )
    curve = json.loads((run_dir / "curve.json").read_text())
    assert len(curve["student"]) == 12 and "validation_fidelity" in curve["student"][-1]
    assert json.loads((run_dir / "train_config.json").read_text())["dataset_hash"] == metrics["dataset_hash"]
    rows = project.ledger.rows("runs", "run_id = ?", (run_id,))
    assert sorted(r["role"] for r in rows) == ["baseline", "student"]
    assert all(r["dataset_hash"] == metrics["dataset_hash"] for r in rows)
    assert project.ledger.verify().ok
    # the distilled student and the baseline learnt different things from the same init
    a = load_predictor(run_dir / "student").label_distribution(["ticket refund charge paid"])
    b = load_predictor(run_dir / "baseline").label_distribution(["ticket refund charge paid"])
    assert a.shape == (1, 3) and abs(a.sum() - 1) < 1e-6 and not (a == b).all()


def test_run_folder_loads_in_plain_transformers(classify_project):
    import subprocess
    import sys

    project = load_project(classify_project)
    run_id = T.train_run(project, baseline=False).run_id
    folder = project.runs_dir / run_id / "student"
    task = json.loads((folder / "distil_task.json").read_text())
    # a fresh interpreter with no distil import: only transformers reads the folder
    code = (
        f"import sys, json, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; f={str(folder)!r}; "
        "m=AutoModelForCausalLM.from_pretrained(f); t=AutoTokenizer.from_pretrained(f); "
        f"task=json.load(open(f+'/distil_task.json')); ids=t(task['prompt_template'].replace('{{input}}','my "
        "invoice'),return_tensors='pt'); out=m(**ids).logits[0,-1,task['label_token_ids']]; print(out.shape[0]); "
        "assert 'distil' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(task["labels"]))
    assert not (project.runs_dir / run_id / "baseline").exists()


def test_classification_never_builds_full_vocabulary_logits(classify_project):
    project = load_project(classify_project)
    build = build_student(project.spec.student, T.teacher_folder(project.spec))
    calls = []
    build.model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    examples = classify_examples(curated_splits(project).splits["train"], project.spec.task.label_names)
    batch = classify_batch(build.tokenizer, examples, [0, 1, 2, 3], 64)
    objective = _student_objective(project, build, examples, project.spec.train)
    loss, _ = objective.loss(build.model, batch, 4.0)
    loss.backward()
    assert calls == [] and torch.isfinite(loss)


def test_accumulation_two_by_four_equals_one_by_eight_through_the_model(classify_project):
    project = load_project(classify_project)
    cfg = TrainSpec.model_validate({**project.spec.train.model_dump(), "distillation": {"alpha": 0.3}})
    build = build_student(project.spec.student, T.teacher_folder(project.spec))
    examples = classify_examples(curated_splits(project).splits["train"], project.spec.task.label_names)
    objective = _student_objective(project, build, examples, cfg)
    model = build.model

    def grads(groups):
        model.zero_grad()
        total = 0.0
        for rows in groups:
            loss, _ = objective.loss(model, classify_batch(build.tokenizer, examples, rows, 64), 8.0)
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    one_loss, one = grads([list(range(8))])
    two_loss, two = grads([list(range(4)), list(range(4, 8))])
    assert two_loss == pytest.approx(one_loss, rel=1e-5)
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path, tiny_teacher_dir):
    from tests.train.conftest import classify_records, write_curated, write_spec

    specs = []
    for name in ("straight", "resumed"):
        spec = write_spec(tmp_path / name, tiny_teacher_dir, train={"epochs": 2, "grad_accum": 2, "batch_size": 2})
        write_curated(spec, classify_records(16), classify_records(6, seed=1))
        specs.append(load_project(spec))
    straight = T.train_run(specs[0], baseline=False, run_id="r1").run_id
    resumed = specs[1]
    T.train_run(resumed, baseline=False, run_id="r1", max_steps=3)  # interrupted part-way through epoch 1
    assert not (resumed.runs_dir / "r1" / "student").exists()
    progress = json.loads((resumed.runs_dir / "r1" / "checkpoints" / "student" / "progress.json").read_text())
    assert progress["global_step"] == 3 and not progress["done"]
    T.train_run(resumed, baseline=False, run_id="r1")
    from safetensors.torch import load_file

    a = load_file(specs[0].runs_dir / straight / "student" / "model.safetensors")
    b = load_file(resumed.runs_dir / "r1" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert json.loads((resumed.runs_dir / "r1" / "metrics.json").read_text())["student"]["steps"] == 8


def test_no_curated_dataset_is_a_user_error(tmp_path, tiny_teacher_dir):
    from tests.train.conftest import write_spec

    with pytest.raises(DataError, match="no curated dataset"):
        T.train_run(load_project(write_spec(tmp_path / "p", tiny_teacher_dir)))


def test_resume_takes_only_a_plain_run_id_that_exists(tmp_path, tiny_teacher_dir, capsys):
    from distil.cli import main
    from tests.train.conftest import write_spec

    spec = write_spec(tmp_path / "p", tiny_teacher_dir)
    for bad, said in (("../x", "not a plain name"), ("nope", "no folder")):
        code = main(["train", "--resume", bad, "--spec", str(spec)])
        assert code == 2 and said in capsys.readouterr().err
    with pytest.raises(RunError, match="not a plain name"):
        T.train_run(load_project(spec), run_id="../x")


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda(10, 0.2)
    values = [f(s) for s in range(10)]
    assert values[0] == 0.5 and values[1] == 1.0 and values[2] == 1.0 and values[-1] < 0.1
    assert all(a >= b for a, b in zip(values[2:], values[3:], strict=False))


def test_step_rows_split_every_row_once():
    order = list(range(20))
    seen = [r for rank in range(2) for micro in step_rows(order, 1, 8, 2, 2, 2, rank) for r in micro]
    assert sorted(seen) == list(range(8, 16))


def test_frozen_embeddings_stay_as_initialised_while_the_layers_learn(tmp_path, tiny_teacher_dir):
    from safetensors.torch import load_file

    from .conftest import classify_records, write_curated, write_spec

    spec = write_spec(tmp_path / "frozen", tiny_teacher_dir, train={"freeze_embeddings": True})
    write_curated(spec, classify_records(24), classify_records(9, seed=1))
    project = load_project(spec)
    build = build_student(project.spec.student, T.teacher_folder(project.spec), seed=0)
    before = {k: v.clone() for k, v in build.model.state_dict().items()}
    run_id = T.train_run(project, baseline=False).run_id
    after = load_file(str(project.runs_dir / run_id / "student" / "model.safetensors"))
    embed = next(k for k in before if k.endswith("embed_tokens.weight"))
    assert torch.equal(after[embed], before[embed])
    moved = [k for k in before if k in after and "layers" in k and not torch.equal(after[k], before[k])]
    assert moved, "no decoder weight changed"


@pytest.mark.parametrize("keep", ["best", "last"])
def test_a_run_ends_with_the_best_evaluations_weights_or_the_last_steps(classify_project, keep):
    from safetensors.torch import load_file

    classify_project.write_text(
        classify_project.read_text().replace("patience: 0", f"patience: 0\n  eval_every: 1\n  keep: {keep}")
    )
    project = load_project(classify_project)
    run_id = T.train_run(project, baseline=False).run_id
    run_dir = project.runs_dir / run_id
    checkpoint = torch.load(run_dir / "checkpoints" / "student" / "state.pt", map_location="cpu", weights_only=True)
    best, last = checkpoint["best"], checkpoint["model"]
    assert any(not torch.equal(best[k], last[k]) for k in last)  # the best evaluation came before the last step
    saved = load_file(run_dir / "student" / "model.safetensors")
    wanted = best if keep == "best" else last
    assert saved and all(torch.equal(saved[k], wanted[k]) for k in saved)
    assert json.loads((run_dir / "metrics.json").read_text())["student"]["kept"] == keep


class _TouchWhenLoaded:
    """Pickles as a call to ``Path.touch``: loading it without ``weights_only`` would run that call."""

    def __init__(self, path):  # noqa: ANN001
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.path,))


def test_a_crafted_checkpoint_is_refused_and_never_run(classify_project, tmp_path):
    project = load_project(classify_project)
    paused = T.train_run(project, baseline=False, run_id="r1", max_steps=1)
    assert not paused.finished and not paused.roles
    state = project.runs_dir / "r1" / "checkpoints" / "student" / "state.pt"
    marker = tmp_path / "ran"
    saved = torch.load(state, map_location="cpu", weights_only=True)
    torch.save({**saved, "scheduler": _TouchWhenLoaded(marker)}, state)
    with pytest.raises(TrainError, match=r"state.pt: refused: the checkpoint holds more than tensors and plain values"):
        T.train_run(project, baseline=False, run_id="r1")
    assert not marker.exists()
