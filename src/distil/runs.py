"""Where a run lives: one object per run folder, and the one answer to "which run" and "which data".

``.distil/runs/<run_id>/`` holds the trained models and every file later steps write about them.
:class:`RunDir` names each of those files once (``run.evaluation``, ``run.student``), checks a run id
a user typed once, and finds the curated dataset the run was trained on from the ledger, never by
guessing. :func:`latest_run` and :func:`latest_curated` are the only places that decide what "the
newest" run or dataset is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from distil.data.records import Record, read_records
from distil.errors import DataError, RecordedFileError, RunError
from distil.spec.io import Project
from distil.spec.names import RUN_ID_PATTERN, run_id_problem

LIST_RUNS_HINT = "list the runs with `distil ledger log --kind run.trained` (or look in .distil/runs/)"
PREDICTIONS_FILE = "predictions.parquet"
EVALUATIONS_FOLDER = "evaluations"  # the second and later evaluations of a run: nothing recorded is overwritten
DISTILLED = "distilled"
VERSION_PATTERN = re.compile(r"-v(\d+)\.(?:json|parquet)$")


def evaluation_version(path: Path) -> int:
    """Which evaluation of its run a file is: 1 for ``evaluation.json``, n for ``evaluations/evaluation-v<n>.json``."""
    version = VERSION_PATTERN.search(path.name)
    return int(version.group(1)) if version else 1


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a plain folder name (no separators, no ``..``, at most 128 characters)."""
    problem = run_id_problem(run_id)
    if problem:
        raise RunError(problem, hint=LIST_RUNS_HINT)
    return run_id


@dataclass(frozen=True)
class CuratedData:
    """A curated dataset: its hash and the folder of its ``{train,validation,test}.parquet``."""

    dataset_hash: str
    folder: Path

    def split_path(self, split: str) -> Path:
        return self.folder / f"{split}.parquet"

    def records(self, split: str) -> list[Record]:
        """The records of ``split``; [] when the dataset has no such split."""
        path = self.split_path(split)
        return read_records(path) if path.is_file() else []


def require_recorded_files(project: Project, seq: int, what: str, *, unrecorded: bool = False) -> None:
    """Refuse (RecordedFileError, exit 2) to load ``what`` when a file ledger event ``seq`` recorded changed or is
    gone (with ``unrecorded``: or a file lies in a recorded folder that was not there when it was recorded)."""
    problems = project.ledger.file_problems(seq, unrecorded=unrecorded)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RecordedFileError(f"{what}: {problems[0]}{more}; ledger event {seq} recorded it, so it is not loaded")


def curated_data(project: Project, dataset_hash: str) -> CuratedData:
    """The curated dataset the ledger recorded under ``dataset_hash``, its recorded files checked; DataError when
    it has none."""
    rows = project.ledger.verified_rows("datasets", "dataset_hash = ? AND stage = 'curated'", (dataset_hash,))
    if not rows:
        raise DataError(
            f"dataset {dataset_hash}: no curated dataset with this hash in the ledger", hint="run `distil curate`"
        )
    require_recorded_files(project, rows[0]["event_seq"], f"dataset {dataset_hash[:19]}")
    return CuratedData(rows[0]["dataset_hash"], project.path(rows[0]["path"]))


def latest_curated(project: Project) -> CuratedData:
    """The newest curated dataset (the newest verified ``datasets`` row with stage ``curated``), its recorded files
    checked; DataError when there is none or its training split is gone."""
    row = project.ledger.verified_latest("datasets", "stage = ?", ("curated",))
    if row is None:
        raise DataError("no curated dataset yet", hint="run `distil generate` then `distil curate`")
    data = CuratedData(row["dataset_hash"], project.path(row["path"]))
    if not data.split_path("train").is_file():
        raise DataError(
            f"{data.split_path('train')}: the curated dataset the ledger names is missing",
            hint="run `distil curate` again",
        )
    require_recorded_files(project, row["event_seq"], f"dataset {data.dataset_hash[:19]}")
    return data


class RunDir:
    """``.distil/runs/<run_id>/`` of ``project``: a property per file, the run id checked on the way in.

    ``RunDir(project, run_id)`` refuses a run id that is not a plain name or has no folder;
    :meth:`new` only checks the name (for the step that creates the folder).
    """

    def __init__(self, project: Project, run_id: str, *, must_exist: bool = True):
        self.project = project
        self.run_id = check_run_id(run_id)
        self.folder = project.runs_dir / self.run_id
        if must_exist and not self.folder.is_dir():
            raise RunError(f"run {self.run_id}: no folder {self.folder}", hint=LIST_RUNS_HINT)

    @classmethod
    def new(cls, project: Project, run_id: str) -> RunDir:
        """A run about to be written: the name is checked, the folder need not exist yet."""
        return cls(project, run_id, must_exist=False)

    def __repr__(self) -> str:
        return f"RunDir({self.folder})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.folder == self.folder

    def __hash__(self) -> int:
        return hash(self.folder)

    # --- what training writes ------------------------------------------------------------------------

    @property
    def student(self) -> Path:
        return self.folder / "student"

    @property
    def baseline(self) -> Path:
        return self.folder / "baseline"

    def model(self, role: str) -> Path:
        """The folder of ``role`` (``student`` or ``baseline``)."""
        if role not in ("student", "baseline"):
            raise RunError(f"run {self.run_id}: no model role {role!r} (student or baseline)")
        return self.folder / role

    def checked_model(self, role: str) -> Path:
        """The folder of ``role``, after checking it is what ``distil train`` recorded: its verified ``runs`` row's
        event names the folder, and every file in it has the recorded hash, none missing, none added.
        RecordedFileError (exit 2, naming the file) otherwise; call it before loading the model."""
        folder = self.model(role)
        row = self.project.ledger.verified_latest("runs", "run_id = ? AND role = ?", (self.run_id, role))
        event = self.project.ledger.event(row["event_seq"]) if row else None
        recorded = self.project.ledger.recorded_path(folder)
        if event is None or recorded not in (event.payload.get("files") or {}):
            raise RecordedFileError(
                f"run {self.run_id}: the ledger records no files for its {role} ({recorded}), so they cannot be "
                "checked before loading",
                hint=f"train the run with `distil train` (or `distil train --resume {self.run_id}`), which records "
                "them",
            )
        if not folder.is_dir():
            raise RecordedFileError(
                f"run {self.run_id}: recorded file {recorded} is missing; ledger event {event.seq} recorded it"
            )
        require_recorded_files(self.project, event.seq, f"run {self.run_id}", unrecorded=True)
        return folder

    def checkpoints(self, role: str) -> Path:
        """``checkpoints/<role>/``: the loop's state for a resumed run (tensors and plain values only)."""
        return self.folder / "checkpoints" / self.model(role).name

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def curve(self) -> Path:
        return self.folder / "curve.json"

    @property
    def train_config(self) -> Path:
        return self.folder / "train_config.json"

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``: event files for `tensorboard --logdir` (``train.report_to: tensorboard``)."""
        return self.folder / "tensorboard"

    @property
    def mlflow_store(self) -> Path:
        """``mlruns/``: an MLflow file store for `mlflow ui --backend-store-uri` (``train.report_to: mlflow``)."""
        return self.folder / "mlruns"

    # --- what later steps write ----------------------------------------------------------------------

    # Every evaluation of a run keeps its files: the first is ``evaluation.json`` + ``predictions.parquet``
    # (``evaluation.<variant>.json`` for another variant), the n-th ``evaluations/evaluation-v<n>.json`` +
    # ``evaluations/predictions-v<n>.parquet`` (``evaluations/evaluation.<variant>-v<n>.json``). Which one is
    # the newest is the ledger's answer: the newest verified ``evaluations`` row of the run and variant.

    @property
    def evaluation(self) -> Path:
        """The newest evaluation's file (the ledger's newest verified row; ``evaluation.json`` without one)."""
        return self.variant_evaluation(DISTILLED)

    @property
    def predictions(self) -> Path:
        """Per-item answers of every model on the validation, test and gold items, of the newest evaluation."""
        return self.predictions_beside(self.evaluation)

    def predictions_beside(self, evaluation: Path) -> Path:
        """The predictions file written with the evaluation file ``evaluation``."""
        version = VERSION_PATTERN.search(evaluation.name)
        return (
            self.folder / EVALUATIONS_FOLDER / f"predictions-v{version.group(1)}.parquet"
            if version
            else self.folder / PREDICTIONS_FILE
        )

    def evaluation_file(self, variant: str = DISTILLED, version: int = 1) -> Path:
        """Where version ``version`` of ``variant``'s evaluation is written."""
        name = "evaluation" if variant == DISTILLED else f"evaluation.{variant}"
        return (
            self.folder / f"{name}.json"
            if version == 1
            else self.folder / EVALUATIONS_FOLDER / f"{name}-v{version}.json"
        )

    def next_evaluation(self, variant: str = DISTILLED) -> tuple[Path, Path]:
        """(evaluation file, predictions file) for a new evaluation of ``variant``: a version no file and no ledger
        row has used, so an earlier evaluation (and the hashes the ledger keeps of it) is never overwritten."""
        recorded = len(self.project.ledger.rows("evaluations", "run_id = ? AND variant = ?", (self.run_id, variant)))
        on_disk = [1] if self.evaluation_file(variant).is_file() else []
        on_disk += [
            int(m.group(1))
            for p in self.folder.glob(f"{EVALUATIONS_FOLDER}/*")
            if (m := VERSION_PATTERN.search(p.name))
        ]
        version = max([recorded, *on_disk]) + 1
        path = self.evaluation_file(variant, version)
        return path, self.predictions_beside(path)

    def variant_evaluation(self, variant: str) -> Path:
        """The newest evaluation file of ``variant`` the ledger names (verified); without a row, the first
        version's name (``evaluation.json``, ``evaluation.<variant>.json``)."""
        row = self.project.ledger.verified_latest("evaluations", "run_id = ? AND variant = ?", (self.run_id, variant))
        return self.project.path(row["path"]) if row else self.evaluation_file(variant)

    @property
    def variants(self) -> dict[str, Path]:
        """The newest file of every evaluated variant: ``{"distilled": evaluation.json, "quantized": ...}``."""
        rows = self.project.ledger.verified_rows("evaluations", "run_id = ?", (self.run_id,), order="event_seq ASC")
        found = {r["variant"]: self.project.path(r["path"]) for r in rows}
        if not found:  # a folder the ledger has no evaluation of (copied in by hand)
            found = {DISTILLED: self.evaluation_file()} if self.evaluation_file().is_file() else {}
            for path in sorted(self.folder.glob("evaluation.*.json")):
                found[path.name.split(".")[1]] = path
        return {variant: path for variant, path in found.items() if path.is_file()}

    @property
    def router(self) -> Path:
        return self.folder / "router.json"

    @property
    def report_html(self) -> Path:
        return self.folder / "report.html"

    @property
    def report_md(self) -> Path:
        return self.folder / "report.md"

    # --- what the ledger says about it ---------------------------------------------------------------

    def dataset(self) -> CuratedData:
        """The curated dataset this run was trained on, from its ``runs`` ledger row; RunError without one."""
        rows = self.project.ledger.verified_rows("runs", "run_id = ?", (self.run_id,))
        if not rows:
            raise RunError(
                f"run {self.run_id}: the ledger has no `runs` row, so the dataset it was trained on is unknown",
                hint=f"train it with `distil train` (or `distil train --resume {self.run_id}`), which records the row",
            )
        return curated_data(self.project, rows[0]["dataset_hash"])


def latest_run(project: Project, *, shipped_first: bool = False) -> RunDir:
    """The newest trained run (``shipped_first``: the newest run decided ``ship``, when there is one).

    Trained means a ``runs`` ledger row; a project whose ledger has none falls back to the newest run
    folder holding a student (a folder copied in by hand). RunError when there is no run at all. Only
    rows bound to their (signed, where the spec sets keys) events count: a forged one is refused
    (LedgerError), never followed.
    """
    ledger = project.ledger
    if shipped_first:
        shipped = ledger.verified_latest("decisions", "decision = ?", ("ship",))
        if shipped:
            return RunDir(project, str(shipped["run_id"]))
    trained = ledger.verified_latest("runs", "role = ?", ("student",))
    if trained:
        return RunDir(project, str(trained["run_id"]))
    runs = project.runs_dir.glob("*") if project.runs_dir.is_dir() else []
    folders = [
        p for p in runs if RUN_ID_PATTERN.fullmatch(p.name) and (p / "student").is_dir()
    ]  # not a temporary .name
    if folders:
        return RunDir(project, max(folders, key=lambda p: p.stat().st_mtime).name)
    raise RunError(f"no trained run in {project.runs_dir}", hint="run `distil train` first")


def run_or_latest(project: Project, run_id: str | None, *, shipped_first: bool = False) -> RunDir:
    """The run a user named, else :func:`latest_run`."""
    return RunDir(project, run_id) if run_id else latest_run(project, shipped_first=shipped_first)
