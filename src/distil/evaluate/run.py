"""``distil evaluate``: score the teacher, the distilled student and the baseline on the held-out split
(and the gold set), time them the same way, price them, check the locked gate, write evaluation.json.

The recipe is straight: find the run and its curated dataset, describe the three models as loaders
(:class:`ModelUnderTest`), hand them to :func:`evaluate_models`, write the file and the ledger row.
:func:`evaluate_models` knows nothing about where models come from, so tests give it plain callables.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil.data.evalsets import require_locked_test
from distil.data.records import Record
from distil.data.sources import read_gold_inputs, tag_slices
from distil.data.split import PROBE
from distil.decide import gate_checks, summarise_evaluation
from distil.errors import DataError, EvaluationError
from distil.evaluate.build_cost import ledger_build_cost
from distil.evaluate.cost import MEASURED_VALIDATION, BuildLedger, Escalation, cost_summary
from distil.evaluate.figures import label_warnings
from distil.evaluate.latency import (
    MEMORY_METHOD,
    default_threads,
    measure_model,
    params_in_safetensors,
    size_on_disk,
)
from distil.evaluate.predictions import prediction_rows, write_predictions
from distil.evaluate.scoring import gold_indices, score_classifier, score_generator
from distil.files import write_text_atomic
from distil.runs import RunDir, evaluation_version, run_or_latest
from distil.serve.router import spec_calibration
from distil.spec.gate import require_unchanged_gate
from distil.spec.models import Spec
from distil.teachers.loading import local_model_folder, resolve_source
from distil.teachers.prompts import generation_prompt
from distil.teachers.registry import build_teacher
from distil.tracking import log_evaluation, require_library

ANSWERED_UNSCORED = ("validation", PROBE)  # answered into predictions.parquet for iterate to mine; never scored
MODEL_ORDER = ("student", "baseline", "teacher")  # largest last: its memory is not hidden by reuse


@dataclass
class ModelUnderTest:
    """How to get one model and how to ask it.

    ``load()`` returns a predictor; ``predict(predictor, inputs)`` returns label distributions
    ``[n, L]`` (classify) or texts (generate). The teacher's ``predict`` includes its few-shot prompt.
    """

    load: Callable[[], Any]
    predict: Callable[[Any, list[str]], Any]
    size_bytes: int | None = None
    params: int | None = None
    reference_outputs: Any = None  # teacher only: outputs recorded at labelling time for the held-out split
    # generate tasks: (predictor, inputs, teacher texts) -> [n] share of the teacher's tokens reproduced, teacher-forced
    token_agreement: Callable[[Any, list[str], list[str]], Any] | None = None


@dataclass
class EvalSet:
    name: str  # "validation", "probe", "test" or "gold"
    records: list[Record]


@dataclass
class Evaluation:
    """The evaluation document and every model's answer on every item (the rows of predictions.parquet)."""

    document: dict[str, Any]
    predictions: list[dict[str, Any]]


def _batched(predict: Callable[[list[str]], Any], inputs: Sequence[str], batch_size: int = 32) -> list:
    out: list = []
    for start in range(0, len(inputs), batch_size):
        out.extend(list(predict(list(inputs[start : start + batch_size]))))
    return out


def _latency_fields(measured: Any) -> dict[str, Any]:
    t = measured.timing
    return {
        "p50_ms": t.p50_ms,
        "p95_ms": t.p95_ms,
        "throughput_per_s": t.throughput_per_s,
        "params": measured.params,
        "size_bytes": measured.size_bytes,
        "served_bytes": measured.served_bytes,
        "peak_memory_bytes": measured.peak_memory_bytes,
        "latency": {
            "mean_ms": t.mean_ms,
            "requests": t.requests,
            "warmup": t.warmup,
            "batch_size": t.batch_size,
            "throughput_batches": t.throughput_batches,
            "threads": t.threads,
            "samples_ms": t.samples_ms,
            "memory_method": MEMORY_METHOD,
        },
    }


def recorded_teacher_outputs(records: Sequence[Record], classify: bool) -> Any:
    """The teacher's answers written into the records at labelling time; None when any record lacks one."""
    if classify:
        probs = [r.label_probs for r in records]
        return np.asarray(probs, dtype=np.float64) if all(p is not None for p in probs) else None
    texts = [r.teacher_text for r in records]
    return texts if all(t is not None for t in texts) else None


def evaluate_models(
    spec: Spec,
    held_out: Sequence[Record],
    models: dict[str, ModelUnderTest],
    gold: Sequence[Record] = (),
    thresholds: dict[str, Any] | None = None,
    threads: int | None = None,
    requests: int = 100,
    warmup: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    throughput_budget_s: float | None = 20.0,
) -> dict[str, Any]:
    """The evaluation document: ``teacher``, ``student``, ``baseline``, ``cost`` and ``gate`` (see
    :func:`run_models`)."""
    return run_models(
        spec, held_out, models, gold, thresholds, threads, requests, warmup, batch_size, seed, throughput_budget_s
    ).document


def run_models(
    spec: Spec,
    held_out: Sequence[Record],
    models: dict[str, ModelUnderTest],
    gold: Sequence[Record] = (),
    thresholds: dict[str, Any] | None = None,
    threads: int | None = None,
    requests: int = 100,
    warmup: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    throughput_budget_s: float | None = 20.0,
    unscored: dict[str, Sequence[Record]] | None = None,
    build: BuildLedger | None = None,
) -> Evaluation:
    """The evaluation document (``teacher``, ``student``, ``baseline``, ``cost``, ``gate``) and the predictions.

    Every model is loaded, timed at batch 1 (``requests`` calls) and at ``batch_size`` on the gold
    inputs (the held-out ones when there is no gold set) with the same thread count, the timed calls'
    answers completed into its gold predictions (:func:`~distil.evaluate.latency.time_predict`), and run on
    the held-out split. Teacher outputs recorded in the held-out records are used as the
    reference when ``models["teacher"].reference_outputs`` is given, else the teacher is run.
    Throughput is timed over up to 3 batches, fewer for a model whose next batch would end past
    ``throughput_budget_s`` (a few-shot teacher on a CPU: one batch).

    The ``unscored`` sets (``{"validation": [...], "probe": [...]}``) are answered too, not scored (the
    document is about the held-out split and the gold set), so a later round can mine the student's
    failures from them without a model loaded; the teacher's answers there are the recorded ones when
    every record has one.

    The ``cost`` block prices each model's measured throughput, the share the router would escalate on the
    validation answers (:func:`escalation_on_validation`) and ``build`` (what the ledger recorded; see
    :mod:`distil.evaluate.build_cost`).
    """
    if not held_out:
        raise EvaluationError(
            "evaluate: the held-out split is empty", hint="curate more data, or give data.split.test a larger share"
        )
    missing = {"teacher", "student", "baseline"} - set(models)
    if missing:
        raise EvaluationError(f"evaluate: no {', '.join(sorted(missing))} to evaluate")
    threads = threads or default_threads()
    classify = spec.task.kind == "classify"
    sets = [EvalSet("test", list(held_out))] + ([EvalSet("gold", list(gold))] if gold else [])
    timed = sets[-1]  # every model is timed on the gold inputs (else the held-out ones), which it answers on the way
    answered = [EvalSet(name, list(records)) for name, records in (unscored or {}).items() if records] + sets
    recorded = {"test": models["teacher"].reference_outputs}
    recorded.update(
        {s.name: recorded_teacher_outputs(s.records, classify) for s in answered if s.name not in ("test", "gold")}
    )
    timing_inputs = [r.input for r in timed.records]

    outputs: dict[str, dict[str, Any]] = {}
    measured: dict[str, Any] = {}
    tokens: dict[str, Any] = {}  # generate: per-item teacher-forced token agreement of the trained models
    for name in MODEL_ORDER:
        model = models[name]
        m = measure_model(
            model.load,
            model.predict,
            timing_inputs,
            threads,
            requests,
            warmup,
            batch_size,
            params=model.params,
            size_bytes=model.size_bytes,
            budget_s=throughput_budget_s,
        )
        outputs[name] = {}
        for s in answered:
            if name == "teacher" and recorded.get(s.name) is not None:
                outputs[name][s.name] = recorded[s.name]
            elif s is timed:
                outputs[name][s.name] = m.timing.outputs
            else:
                outputs[name][s.name] = _batched(
                    lambda batch, p=m.predictor, f=model.predict: f(p, batch), [r.input for r in s.records], batch_size
                )
        reference = models["teacher"].reference_outputs
        if not classify and model.token_agreement is not None and reference is not None:
            tokens[name] = model.token_agreement(m.predictor, [r.input for r in held_out], [str(t) for t in reference])
        m.predictor = None  # free the model before the next one is measured
        measured[name] = m

    document: dict[str, Any] = {}
    for name in ("teacher", "student", "baseline"):
        block: dict[str, Any] = {}
        for s in sets:
            tags = [r.tags for r in s.records]
            if classify:
                scored = score_classifier(
                    np.asarray(outputs["teacher"][s.name], dtype=np.float64),
                    np.asarray(outputs[name][s.name], dtype=np.float64),
                    gold_indices([r.gold_label for r in s.records], spec.task.label_names),
                    tags,
                    len(spec.task.labels),
                    seed=seed,
                )
            else:
                scored = score_generator(
                    [str(x) for x in outputs["teacher"][s.name]],
                    [str(x) for x in outputs[name][s.name]],
                    tags,
                    seed=seed,
                    token_agreement=tokens.get(name) if s.name == "test" else None,
                )
            if s.name == "test":
                block.update(scored)
            else:
                block["gold"] = scored
        block.update(_latency_fields(measured[name]))
        document[name] = block

    if classify:
        document["labels"] = list(spec.task.label_names)
        document["warnings"] = label_warnings(document)
    validation = {name: outputs[name].get("validation") for name in ("teacher", "student")}
    document["cost"] = cost_summary(
        spec.cost,
        measured["teacher"].timing.throughput_per_s,
        measured["student"].timing.throughput_per_s,
        escalation_on_validation(spec, validation["student"], validation["teacher"]),
        build,
    )
    checks = gate_checks(thresholds or {}, summarise_evaluation(document))
    document["gate"] = {"checks": [asdict(c) for c in checks], "all_pass": all(c.passed for c in checks)}
    labels = spec.task.label_names if classify else None
    rows = [
        row
        for s in answered
        for name in ("teacher", "student", "baseline")
        for row in prediction_rows(
            s.name,
            s.records,
            name,
            outputs[name][s.name],
            labels,
            recorded=name == "teacher" and recorded.get(s.name) is not None,
        )
    ]
    return Evaluation(document, rows)


def escalation_on_validation(spec: Spec, student: Any, teacher: Any) -> Escalation:
    """The share of requests the spec's router would send to the teacher, on the validation answers.

    The same calibration ``distil serve`` runs (:func:`distil.serve.router.spec_calibration`), on the same
    split, so the evaluation prices the escalations a deployment pays for. Never the test split: the
    threshold is fitted there. A generate task is served by the student alone.
    """
    if spec.task.kind != "classify":
        return Escalation(0.0, "generate task: `distil serve` sends every request to the student")
    if student is None or teacher is None or len(student) == 0:
        if isinstance(spec.router.threshold, float):
            return Escalation(None, "not measured: no validation answers to apply router.threshold to")
        return Escalation(
            0.0, "no validation answers: `distil serve` has nothing to calibrate on and escalates nothing"
        )
    found = spec_calibration(spec, np.asarray(student, dtype=np.float64), np.asarray(teacher, dtype=np.float64))
    return Escalation(found.escalated_share, MEASURED_VALIDATION, found.threshold, found.target, found.n)


# --- finding the run and its data --------------------------------------------------------------------


def read_gold(project: Any) -> list[Record]:
    """The spec's gold set (JSONL or CSV, read with ``data.fields``; every line labelled), as records."""
    if not project.spec.data.gold:
        return []
    path = project.path(project.spec.data.gold)
    if not path.is_file():
        raise DataError(f"data.gold: {path} not found", hint="fix data.gold in distil.yaml or remove it")
    return [
        Record(
            input=item.input,
            source="gold",
            tags=tag_slices(item.input, project.spec.data.slices, item.tags),  # the same rules as every record's
            gold_label=item.label,
            teacher_text=item.label,
        )
        for item in read_gold_inputs(path, project.spec)
    ]


# --- loading the real models -------------------------------------------------------------------------


def _teacher_under_test(project: Any, held_out: Sequence[Record]) -> ModelUnderTest:
    spec = project.spec
    used = Counter(r.teacher_id for r in held_out if r.teacher_id)
    teacher_spec = spec.teacher(used.most_common(1)[0][0] if used else None)
    size = params = None
    if teacher_spec.scheme in ("hf", "gguf"):
        local = resolve_source(teacher_spec.source)
        size = size_on_disk(local.gguf_path if local.scheme == "gguf" else local.folder)
        params = params_in_safetensors(local_model_folder(teacher_spec.source)[0])

    def load() -> Any:
        return build_teacher(project, teacher_spec)

    reference = recorded_teacher_outputs(held_out, spec.task.kind == "classify")
    if spec.task.kind == "classify":
        return ModelUnderTest(load, lambda t, batch: t.label_distribution(batch), size, params, reference)
    instruction = spec.task.instruction
    return ModelUnderTest(
        load, lambda t, batch: t.generate([generation_prompt(instruction, x) for x in batch]), size, params, reference
    )


def _student_under_test(folder: Path, kind: str) -> ModelUnderTest:
    if not folder.is_dir():
        raise EvaluationError(
            f"evaluate: {folder} not found", hint="run `distil train` to build the student and the baseline"
        )

    def load() -> Any:
        from distil.train.students import load_predictor

        return load_predictor(folder)

    if kind == "classify":
        return ModelUnderTest(
            load, lambda p, batch: p.label_distribution(batch), size_on_disk(folder), params_in_safetensors(folder)
        )
    return ModelUnderTest(
        load,
        lambda p, batch: p.generate(batch),
        size_on_disk(folder),
        params_in_safetensors(folder),
        token_agreement=_token_agreement,
    )


def _token_agreement(predictor: Any, inputs: list[str], teacher_texts: list[str]) -> np.ndarray:
    # torch and transformers are imported only for a real student
    from distil.train.token_agreement import teacher_forced_agreement

    return teacher_forced_agreement(
        predictor.model, predictor.tokenizer, inputs, teacher_texts, predictor.task.get("max_length", 256)
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has neither."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def record_evaluation(
    project: Any,
    run_id: str,
    document: dict[str, Any],
    actor: str = "",
    extra: dict[str, Any] | None = None,
    predictions: Sequence[dict[str, Any]] | None = None,
) -> tuple[Path, Any]:
    """Write a new version of the run's evaluation (and its predictions) atomically and append the ``evaluation`` row.

    The first evaluation is ``evaluation.json``; a later one goes to ``evaluations/evaluation-v<n>.json``
    (:meth:`RunDir.next_evaluation`), so the files earlier rows recorded stay as they were."""
    run = RunDir(project, run_id)
    evaluation_path, predictions_path = run.next_evaluation()
    text = json.dumps(_finite(document), indent=2, allow_nan=False, default=_jsonable)
    files = [write_text_atomic(evaluation_path, text)]
    if predictions is not None:
        files.append(write_predictions(predictions_path, predictions))
    path = files[0]
    summary = _finite(summarise_evaluation(document))
    relative = str(path.relative_to(project.root))
    event = project.ledger.append(
        "evaluation",
        {
            "run_id": run_id,
            "variant": "distilled",
            "path": relative,
            "summary": summary,
            "all_pass": document["gate"]["all_pass"],
            **(extra or {}),
        },
        actor=actor or project.spec.roles.driver,
        files=files,
        table="evaluations",
        row={"run_id": run_id, "variant": "distilled", "path": relative, "summary": summary},
    )
    return path, event


def evaluate_run(
    project: Any,
    run_id: str | None = None,
    actor: str = "",
    threads: int | None = None,
    requests: int = 100,
    models: dict[str, ModelUnderTest] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run (default: the latest) and record it. Returns (the new evaluation file's path, document).

    Refuses (GateError) when the gate is not locked or changed since it was locked. ``models``
    replaces the real teacher / student / baseline loaders (tests, other variants).
    """
    locked = require_unchanged_gate(project)
    report_to = project.spec.train.report_to
    require_library(report_to)  # before the models are loaded: the evaluation is logged where training was
    run = run_or_latest(project, run_id)
    data = run.dataset()
    require_locked_test(project, data.folder)  # every round is compared on the same, locked items
    if not data.split_path("test").is_file():
        raise EvaluationError(
            f"evaluate: {data.split_path('test')} not found", hint="run `distil curate` to rebuild the dataset's splits"
        )
    held_out = data.records("test")
    unscored = {name: data.records(name) for name in ANSWERED_UNSCORED}
    gold = read_gold(project)
    kind = project.spec.task.kind
    # the models are checked against the hashes `distil train` recorded before anything is loaded
    folders = {role: run.checked_model(role) for role in ("student", "baseline")}
    models = models or {
        "teacher": _teacher_under_test(project, held_out),
        "student": _student_under_test(folders["student"], kind),
        "baseline": _student_under_test(folders["baseline"], kind),
    }
    build = ledger_build_cost(project, run.run_id)
    evaluated = run_models(
        project.spec, held_out, models, gold, locked.thresholds, threads, requests, unscored=unscored, build=build
    )
    document = evaluated.document
    document["gate"].update({"version": locked.version, "sha256": locked.sha256, "locked_by": locked.locked_by})
    extra = {
        "dataset_hash": data.dataset_hash,
        "gate_version": locked.version,
        "n_test": len(held_out),
        "n_gold": len(gold),
        "threads": document["student"]["latency"]["threads"],
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path, _ = record_evaluation(
        project, run.run_id, document, actor=actor, extra=extra, predictions=evaluated.predictions
    )
    log_evaluation(report_to, run, project.spec.name, document, evaluation_version(path))
    return path, document
