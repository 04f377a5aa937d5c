"""Experiment tracking where teams already look: TensorBoard or MLflow, as ``train.report_to`` chooses.

Training logs each optimiser step's loss and learning rate and each validation check's fidelity, per
model (``student/loss``, ``baseline/validation_fidelity``); ``distil evaluate`` logs the final evaluation
into the same store (``evaluation/student/agreement``). Each library writes through its own API into the
run folder, so ``tensorboard --logdir .distil/runs/<id>/tensorboard`` or
``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri .distil/runs/<id>/mlruns`` opens it where it is.
A library is imported only when it is chosen.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from distil.errors import TrackingError

if TYPE_CHECKING:
    from distil.runs import RunDir

# report_to -> (the module imported, the pip package that provides it)
LIBRARIES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
RUN_TAG = "distil_run_id"  # the MLflow tag that finds a run again when training resumes or evaluate logs to it
MODELS = ("teacher", "student", "baseline")
NOT_CHARTED = ("step", "epoch")  # the x axis and a counter, not measurements


class Tracker(Protocol):
    """Where scalars go: ``log_metrics({"student/loss": 0.4}, step=12)``; ``close()`` flushes."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def require_library(report_to: str) -> None:
    """Refuse, before any work, a tracker whose library is not installed (one line naming the pip package)."""
    if report_to == "none":
        return
    module, package = LIBRARIES[report_to]
    if importlib.util.find_spec(module) is None:
        raise TrackingError(
            f"train.report_to: {report_to} needs the {module!r} Python package, which is not installed: "
            f"pip install {package}"
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def curve_metrics(role: str, point: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one curve point (loss, lr, validation_fidelity, the objective's notes) under ``role/``."""
    out = {}
    for key, value in point.items():
        number = _number(value)
        if key not in NOT_CHARTED and number is not None:
            out[f"{role}/{key}"] = number
    return out


def evaluation_metrics(document: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of an evaluation.json: each model's held-out block (and its gold block), cost and the verdict."""
    out: dict[str, float] = {}
    for model in MODELS:
        block = document.get(model) or {}
        for prefix, part in ((f"evaluation/{model}", block), (f"evaluation/{model}/gold", block.get("gold") or {})):
            for key, value in part.items():
                number = None if isinstance(value, bool) else _number(value)
                if number is not None:
                    out[f"{prefix}/{key}"] = number
    for key, value in (document.get("cost") or {}).items():
        number = None if isinstance(value, bool) else _number(value)
        if number is not None:
            out[f"evaluation/cost/{key}"] = number
    gate = document.get("gate") or {}
    if "all_pass" in gate:
        out["evaluation/gate/all_pass"] = float(bool(gate["all_pass"]))
    return out


# --- TensorBoard --------------------------------------------------------------------------------------------


class TensorBoardTracker:
    """Event files written by ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (require_library)

        self.writer = SummaryWriter(log_dir=str(folder))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


# --- MLflow -------------------------------------------------------------------------------------------------


def mlflow_uri(store: Path) -> str:
    """$MLFLOW_TRACKING_URI when the team has set one (their server), else the file store in the run folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or store.resolve().as_uri()


class MlflowTracker:
    """One MLflow run per distil run (tag ``distil_run_id``) in the experiment named after the project, found again
    when training resumes and when ``distil evaluate`` logs to it."""

    def __init__(self, uri: str, experiment: str, run_id: str, params: Mapping[str, Any] | None = None):
        # MLflow 3 asks for an explicit opt-in to its file store; choosing report_to: mlflow without a tracking
        # server is that opt-in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1)
        if runs:
            self.run_id = runs[0].info.run_id
            return
        self.run_id = self.client.create_run(experiment_id, run_name=run_id, tags={RUN_TAG: run_id}).info.run_id
        for key, value in (params or {}).items():
            self.client.log_param(self.run_id, key, value)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(name, value, stamp, step) for name, value in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


# --- choosing one -------------------------------------------------------------------------------------------


def flat_params(prefix: str, value: Any, out: dict[str, str] | None = None) -> dict[str, str]:
    """``{"train.optimizer.lr": "0.0005", ...}``: a nested settings dict as MLflow parameters."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, inner in value.items():
            flat_params(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = str(value)
    return out


def open_tracker(
    report_to: str, run: RunDir, experiment: str, params: Mapping[str, Any] | None = None
) -> Tracker | None:
    """The tracker ``report_to`` names for ``run`` (None for ``none``); TrackingError when its library is missing."""
    require_library(report_to)
    if report_to == "tensorboard":
        return TensorBoardTracker(run.tensorboard)
    if report_to == "mlflow":
        return MlflowTracker(mlflow_uri(run.mlflow_store), experiment, run.run_id, params)
    return None


def log_evaluation(report_to: str, run: RunDir, experiment: str, document: Mapping[str, Any], version: int) -> None:
    """Log a recorded evaluation's scalars to the run's tracker at step ``version`` (1 for the first evaluation)."""
    tracker = open_tracker(report_to, run, experiment)
    if tracker is None:
        return
    try:
        tracker.log_metrics(evaluation_metrics(document), step=version)
    finally:
        tracker.close()
