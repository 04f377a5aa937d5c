"""`distil train`: train the distilled student and its hard-label baseline on the newest curated data.

A straight-line recipe: set up (data, student, one objective per model), fit each with the loop, write
results (plain transformers folders, metrics, curve, ledger rows). The loop (:mod:`distil.train.loop`)
knows nothing of distillation; the objectives (:mod:`distil.train.objectives`) own the batch and the
loss; the extras (:mod:`distil.train.extras`) are what the distilled student learns from beyond records.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distil.runs import RunDir
from distil.teachers.loading import local_model_folder
from distil.tracking import Tracker, flat_params, open_tracker, require_library
from distil.train.artefacts import save_model_folder, write_run_file
from distil.train.batches import (
    ClassifyExamples,
    CuratedDataset,
    GenerateExamples,
    classify_examples,
    curated_splits,
    generate_examples,
)
from distil.train.encoders import ENCODER_TEMPLATE, require_positions
from distil.train.extras import attach_logit_cache, on_policy_teacher, rationale_targets, teacher_states_for
from distil.train.loop import FitResult, fit, seed_everything
from distil.train.objectives import ClassifyObjective, GenerateObjective
from distil.train.students import (
    CLASSIFY_TEMPLATE,
    GENERATE_TEMPLATE,
    StudentBuild,
    build_student,
    label_token_ids,
)

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.console import Console

    from distil.spec.io import Project
    from distil.spec.models import Spec

ROLES = ("student", "baseline")
RoleObjective = ClassifyObjective | GenerateObjective


@dataclass
class RoleMetrics:
    """One trained model's numbers, as ``metrics.json`` and the ``run.trained`` ledger row carry them."""

    best_validation_fidelity: float | None
    kept: str
    final_train_loss: float | None
    steps: int
    tokens: int
    tokens_per_s: float
    stopped_early: bool
    seconds: float | None = None  # training wall time over every call that trained it; the payback prices it


@dataclass
class TrainResult:
    """What ``train_run`` did: where it wrote, each model's metrics, how long each took."""

    run_id: str
    run_dir: Path
    dataset_hash: str
    finished: bool  # False: paused by ``max_steps``; resume with the same run id
    roles: dict[str, RoleMetrics] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per model in this call
    size: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskData:
    """The task's examples and how a trained folder is asked (``distil_task.json``)."""

    train: ClassifyExamples | GenerateExamples
    validation: ClassifyExamples | GenerateExamples | None
    task_info: dict[str, Any]
    label_ids: torch.Tensor | None = None  # [L] (classify with a causal student; an encoder's head is over the labels)


def new_run_id(dataset_hash: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{dataset_hash.split(':')[-1][:8]}"


def teacher_folder(spec: Spec) -> Path | None:
    """The local teacher's transformers folder (None for an API teacher)."""
    teacher = spec.teacher()
    return local_model_folder(teacher.source)[0] if teacher.scheme in ("hf", "gguf") else None


def task_data(
    project: Project, data: CuratedDataset, build: StudentBuild, accelerator: Accelerator, console: Console | None
) -> TaskData:
    """Tokenised train / validation examples (generate: with the teacher's top-k attached) and the task file."""
    spec, cfg = project.spec, project.spec.train
    splits = data.splits
    if spec.task.kind == "classify":
        labels = spec.task.label_names
        template = ENCODER_TEMPLATE if build.is_encoder else CLASSIFY_TEMPLATE
        train = classify_examples(splits["train"], labels, template)
        validation = classify_examples(splits["validation"], labels, template) if splits["validation"] else None
        info = {
            "kind": "classify",
            "student_kind": build.kind,
            "prompt_template": template,
            "labels": labels,
            "max_length": cfg.max_length,
        }
        if build.is_encoder:  # the head is over the labels: no label words, no token ids, any tokenizer
            require_positions(build.model, cfg.max_length)
            return TaskData(train, validation, info)
        words = [lab.verbalizers[0] for lab in spec.task.labels]
        label_ids = torch.tensor(label_token_ids(build.tokenizer, words))
        info.update({"label_words": words, "label_token_ids": label_ids.tolist()})
        return TaskData(train, validation, info, label_ids)
    train = generate_examples(splits["train"], build.tokenizer, cfg.max_length)
    attach_logit_cache(project, train, build.tokenizer, accelerator, console)
    validation = (
        generate_examples(splits["validation"], build.tokenizer, cfg.max_length) if splits["validation"] else None
    )
    info = {
        "kind": "generate",
        "prompt_template": GENERATE_TEMPLATE,
        "max_new_tokens": spec.task.max_new_tokens,
        "max_length": cfg.max_length,
    }
    return TaskData(train, validation, info)


def generate_kd(examples: ClassifyExamples | GenerateExamples) -> str | None:
    """What a generate student's KD term reads: ``uld`` (text-aligned, the tokenizers differ or it was asked for),
    ``topk`` (the teacher's top-k by id) or ``sequence`` (the teacher's text only); None for classify."""
    if not isinstance(examples, GenerateExamples):
        return None
    return "uld" if examples.has_aligned else "topk" if examples.has_topk else "sequence"


def role_objectives(
    project: Project, task: TaskData, build: StudentBuild, roles: tuple[str, ...], console: Console | None
) -> dict[str, RoleObjective]:
    """The distilled student's objective (with its extras) and the baseline's (hard labels only)."""
    cfg, tokenizer = project.spec.train, build.tokenizer
    out: dict[str, RoleObjective] = {}
    if project.spec.task.kind == "classify":
        extras = {
            "teacher_states": teacher_states_for(project, build, task.train, console),
            "rationale": rationale_targets(project, tokenizer, task.train, console),
        }
        for role in roles:
            label_ids = task.label_ids.clone() if task.label_ids is not None else None
            out[role] = ClassifyObjective(
                role,
                task.train,
                task.validation,
                label_ids,
                tokenizer,
                cfg,
                kd=role == "student",
                **(extras if role == "student" else {}),
            )
        return out
    teacher = on_policy_teacher(project, build, task.train)
    for role in roles:
        out[role] = GenerateObjective(
            role,
            task.train,
            task.validation,
            tokenizer,
            cfg,
            kd=role == "student",
            teacher=teacher if role == "student" else None,
        )
    return out


def role_metrics(fitted: FitResult, keep: str) -> RoleMetrics:
    state = fitted.state
    return RoleMetrics(
        state.best_fidelity,
        keep,
        state.curve[-1]["loss"] if state.curve else None,
        state.global_step,
        state.tokens,
        state.tokens / max(state.seconds, 1e-9),
        state.stopped_early,
        state.seconds,
    )


def announce_student(console: Console, build: StudentBuild) -> None:
    size = build.size_row()
    of_teacher = (
        f" ({size['fraction_of_teacher']:.1%} of the teacher's {size['teacher_params']:,})"
        if size["teacher_params"]
        else ""
    )
    target = (
        f"; size target ≤ {size['size_max_params']:,}: {'met' if size['within_size_target'] else 'NOT met'}"
        if size["size_max_params"]
        else ""
    )
    console.print(f"student: {build.description}: {size['student_params']:,} parameters{of_teacher}{target}")


def record_runs(project: Project, result: TrainResult, actor: str | None) -> None:
    """One ``run.trained`` ledger row per finished role, its model folder's files hashed (kept once when a run is
    resumed after it was recorded)."""
    run = RunDir.new(project, result.run_id)
    for role, metrics in result.roles.items():
        if project.ledger.latest("runs", "run_id = ? AND role = ?", (result.run_id, role)) is not None:
            continue
        row_metrics = asdict(metrics)
        project.ledger.append(
            "run.trained",
            {"run_id": result.run_id, "role": role, "dataset_hash": result.dataset_hash, "metrics": row_metrics},
            actor=actor or project.spec.roles.driver,
            files=[run.model(role)],
            table="runs",
            row={
                "run_id": result.run_id,
                "dataset_hash": result.dataset_hash,
                "role": role,
                "path": str(run.model(role).relative_to(project.root)),
                "metrics": row_metrics,
            },
        )


def open_run_tracker(project: Project, run: RunDir) -> Tracker | None:
    """The tracker ``train.report_to`` names for this run, with the train settings as its parameters."""
    cfg = project.spec.train
    return open_tracker(cfg.report_to, run, project.spec.name, flat_params("train", cfg.model_dump(mode="json")))


def fit_roles(
    project: Project,
    run: RunDir,
    build: StudentBuild,
    task: TaskData,
    objectives: dict[str, RoleObjective],
    result: TrainResult,
    accelerator: Accelerator,
    console: Console | None,
    max_steps: int | None,
    tracker: Tracker | None,
) -> dict[str, Any]:
    """Fit each role's objective, write its model folder once finished; the curves, per role."""
    cfg = project.spec.train
    curves: dict[str, Any] = {}
    for role, objective in objectives.items():
        started = time.perf_counter()
        fitted = fit(build.model, objective, cfg, run.checkpoints(role), accelerator, console, max_steps, tracker)
        curves[role] = fitted.state.curve
        if fitted.model is None:
            result.finished = False
        elif accelerator.is_main_process:
            save_model_folder(run.model(role), fitted.model, build.tokenizer, task.task_info)
        if fitted.model is not None:
            result.roles[role] = role_metrics(fitted, cfg.keep)
        result.seconds[role] = time.perf_counter() - started
    return curves


def train_run(
    project: Project,
    *,
    baseline: bool = True,
    run_id: str | None = None,
    max_steps: int | None = None,
    actor: str | None = None,
    console: Console | None = None,
    cpu: bool | None = None,
) -> TrainResult:
    """Train the distilled student (and, unless ``baseline=False``, the hard-label baseline) on the newest
    curated dataset; write ``.distil/runs/<run_id>/`` and one ``run.trained`` ledger row per role.

    Passing the ``run_id`` of an unfinished run resumes it from its checkpoints. ``max_steps`` stops each
    role after that many optimiser steps in this call (its checkpoint is kept; call again to go on).
    """
    # accelerate and rich are slow to import; commands that do not train never pay for them
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from rich.console import Console

    spec, cfg = project.spec, project.spec.train
    console = console or Console()
    accelerator = Accelerator(cpu=cpu if cpu is not None else not torch.cuda.is_available())
    if run_id:
        RunDir.new(project, run_id)  # a run id from outside is a plain name (RunError, exit 2) before any work
    require_library(cfg.report_to)  # on every process, before any work: a missing library is one line, no hang
    data = curated_splits(project)
    ids = [run_id or new_run_id(data.dataset_hash)]
    broadcast_object_list(ids)
    run = RunDir.new(project, ids[0])
    run_dir = run.folder
    run_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)
    build = build_student(spec.student, teacher_folder(spec), seed=cfg.seed, labels=spec.task.label_names or None)
    task = task_data(project, data, build, accelerator, console)
    result = TrainResult(ids[0], run_dir, data.dataset_hash, finished=True, size=build.size_row())
    if accelerator.is_main_process:
        write_run_file(
            run.train_config,
            {
                "run_id": result.run_id,
                "dataset_hash": data.dataset_hash,
                "dataset_path": str(data.path),
                "train": cfg.model_dump(),
                "generate_kd": generate_kd(task.train),
                "student": build.description,
                "size": result.size,
                "processes": accelerator.num_processes,
            },
        )
        announce_student(console, build)

    objectives = role_objectives(project, task, build, ROLES if baseline else ROLES[:1], console)
    tracker = open_run_tracker(project, run) if accelerator.is_main_process else None
    try:
        curves = fit_roles(project, run, build, task, objectives, result, accelerator, console, max_steps, tracker)
    finally:
        if tracker is not None:
            tracker.close()
    if accelerator.is_main_process:
        write_run_file(run.curve, curves)
        if result.finished:
            write_run_file(
                run.metrics,
                {
                    "run_id": result.run_id,
                    "dataset_hash": data.dataset_hash,
                    "size": result.size,
                    **{role: asdict(m) for role, m in result.roles.items()},
                },
            )
            record_runs(project, result, actor)
    accelerator.wait_for_everyone()
    return result
