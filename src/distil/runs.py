"""Where a run lives: one object per run folder, and the one answer to "which run" and "which data".

``.distil/runs/<run_id>/`` holds the trained models and every file later steps write about them.
:class:`RunDir` names each of those files once (``run.evaluation``, ``run.student``), checks a run id
a user typed once, and finds the curated dataset the run was trained on from the ledger, never by
guessing. :func:`latest_run` and :func:`latest_curated` are the only places that decide what "the
newest" run or dataset is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distil.data.records import Record, read_records
from distil.errors import DataError, RunError
from distil.spec.io import Project
from distil.spec.names import RUN_ID_PATTERN, run_id_problem

LIST_RUNS_HINT = "list the runs with `distil ledger log --kind run.trained` (or look in .distil/runs/)"
PREDICTIONS_FILE = "predictions.parquet"


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


def curated_data(project: Project, dataset_hash: str) -> CuratedData:
    """The curated dataset the ledger recorded under ``dataset_hash``; DataError when it has none."""
    rows = project.ledger.verified_rows("datasets", "dataset_hash = ? AND stage = 'curated'", (dataset_hash,))
    if not rows:
        raise DataError(f"dataset {dataset_hash}: no curated dataset with this hash in the ledger", hint="run `distil curate`")
    return CuratedData(rows[0]["dataset_hash"], project.path(rows[0]["path"]))


def latest_curated(project: Project) -> CuratedData:
    """The newest curated dataset (the newest ``datasets`` row with stage ``curated``); DataError when there is none
    or its training split is gone."""
    row = project.ledger.latest("datasets", "stage = ?", ("curated",))
    if row is None:
        raise DataError("no curated dataset yet", hint="run `distil generate` then `distil curate`")
    data = CuratedData(row["dataset_hash"], project.path(row["path"]))
    if not data.split_path("train").is_file():
        raise DataError(f"{data.folder}: the curated dataset the ledger names is missing", hint="run `distil curate` again")
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

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def curve(self) -> Path:
        return self.folder / "curve.json"

    @property
    def train_config(self) -> Path:
        return self.folder / "train_config.json"

    # --- what later steps write ----------------------------------------------------------------------

    @property
    def evaluation(self) -> Path:
        return self.folder / "evaluation.json"

    @property
    def predictions(self) -> Path:
        """Per-item answers of every model on the validation, test and gold items (``distil evaluate``)."""
        return self.folder / PREDICTIONS_FILE

    def variant_evaluation(self, variant: str) -> Path:
        """``evaluation.<variant>.json`` (``distilled`` is the plain ``evaluation.json``)."""
        return self.evaluation if variant == "distilled" else self.folder / f"evaluation.{variant}.json"

    @property
    def variants(self) -> dict[str, Path]:
        """Every evaluated variant that has a file: ``{"distilled": evaluation.json, "quantized": ...}``."""
        found = {"distilled": self.evaluation} if self.evaluation.is_file() else {}
        for path in sorted(self.folder.glob("evaluation.*.json")):
            found[path.name.split(".")[1]] = path
        return found

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
    folders = [p for p in runs if RUN_ID_PATTERN.fullmatch(p.name) and (p / "student").is_dir()]  # not a temporary .name
    if folders:
        return RunDir(project, max(folders, key=lambda p: p.stat().st_mtime).name)
    raise RunError(f"no trained run in {project.runs_dir}", hint="run `distil train` first")


def run_or_latest(project: Project, run_id: str | None, *, shipped_first: bool = False) -> RunDir:
    """The run a user named, else :func:`latest_run`."""
    return RunDir(project, run_id) if run_id else latest_run(project, shipped_first=shipped_first)

