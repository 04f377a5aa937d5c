"""The triage student's settings, chosen on a development set the teacher labelled.

Builds the quickstart project once (``distil init --example triage``, then generate and curate through
distil's library, in a temporary folder), then trains the student with each candidate value of one setting
(``--setting temperature``: T=1 and T=2; ``--setting lr``: 2e-4, 5e-4, 1e-3, 2e-3 and 4e-3; ``--setting alpha``,
the weight of cross-entropy on the teacher's top label: 0, 0.25, 0.5 and 0.75; training seeds 0 and 1;
everything else as examples/triage ships) and measures each student's agreement with the teacher on the
inputs of ``examples/triage/dev.jsonl``: 120 tickets outside the project's data (neither seeds, synthetic,
nor gold), labelled once by the same teacher that labelled the training data. Their hand labels play no part.
The rule: the highest mean development agreement over the seeds; a tie keeps the value the example ships.
Neither the test split nor the gold set is consulted.

Writes its section of docs/benchmarks.md, one per setting (README's quickstart section says which set
chose each of the example's settings). Time-boxed: when the first trainings show that the second seed
would not fit ``--budget-minutes``, only training seed 0 runs, and the section says so.

    python benchmarks/triage_student_choice.py
    python benchmarks/triage_student_choice.py --setting lr --work /tmp/triage-choice   # reuse a built project
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402
from _triage import build_project, dev_label_counts, dev_scores, teacher_on_dev, train_alone  # noqa: E402

SEEDS = (0, 1)


@dataclass(frozen=True)
class Setting:
    """One setting of the example's training spec and the values to compare."""

    name: str  # the --setting name and the docs section's suffix
    title: str
    path: tuple[str, ...]  # where it lives under ``train``
    candidates: tuple[float, ...]
    label: str  # how a value is written in the table

    def shipped(self, spec) -> float:  # noqa: ANN001
        value = spec.train
        for part in self.path:
            value = getattr(value, part)
        return float(value)

    def apply(self, spec, value: float):  # noqa: ANN001, ANN201 - a TrainSpec
        group, field = self.path
        inner = getattr(spec.train, group).model_copy(update={field: value})
        return spec.train.model_copy(update={group: inner})

    def show(self, value: float) -> str:
        return f"{self.label}={value:g}"


SETTINGS = {
    "temperature": Setting("temperature", "temperature", ("distillation", "temperature"), (1.0, 2.0), "T"),
    "lr": Setting("lr", "learning rate", ("optimizer", "lr"), (2e-4, 5e-4, 1e-3, 2e-3, 4e-3), "lr"),
    # the weight of cross-entropy on the teacher's top label in alpha * CE + (1 - alpha) * KD
    "alpha": Setting("alpha", "hard-label weight", ("distillation", "alpha"), (0.0, 0.25, 0.5, 0.75), "alpha"),
}


def train_and_score(project, setting: Setting, value: float, seed: int, teacher_probs: np.ndarray) -> dict:  # noqa: ANN001
    """Train the student alone with this value and training seed; its agreement and KL on the dev inputs."""
    from distil.spec.io import Project

    spec = project.spec
    train = setting.apply(spec, value).model_copy(update={"seed": seed})
    variant = Project(project.spec_path, spec.model_copy(update={"train": train}))
    student, seconds = train_alone(variant, f"choice-{setting.name}{value:g}-s{seed}-{spec_digest(train)}")
    return {"value": value, "seed": seed, **dev_scores(student, teacher_probs), "seconds": seconds}


def spec_digest(train) -> str:  # noqa: ANN001 - a TrainSpec
    from distil.teachers.base import sha256_json

    return sha256_json(train.model_dump(mode="json")).removeprefix("sha256:")[:12]


def choose(rows: list[dict], shipped: float) -> tuple[float, dict[float, float]]:
    """The rule: the highest mean development agreement; a tie keeps the shipped value."""
    means = {
        v: float(np.mean([r["agreement"] for r in rows if r["value"] == v])) for v in sorted({r["value"] for r in rows})
    }
    best = max(means.values())
    tied = [t for t, m in means.items() if abs(m - best) < 1e-9]
    return (shipped if shipped in tied else tied[0]), means


def section_body(  # noqa: PLR0913
    spec,  # noqa: ANN001
    setting: Setting,
    rows: list[dict],
    teacher_probs: np.ndarray,
    build_seconds: float | None,
    note: str,
) -> str:
    """The docs/benchmarks.md section: the setting, one row per value, the rule and what it picks."""
    shipped = setting.shipped(spec)
    picked, means = choose(rows, shipped)
    seeds_run = sorted({r["seed"] for r in rows})

    def per_seed(v: float, field: str, fmt: str) -> str:
        return " / ".join(format(r[field], fmt) for r in rows if r["value"] == v)

    table = [
        [
            setting.show(v) + (" (ships)" if v == shipped else ""),
            per_seed(v, "agreement", ".3f"),
            f"{means[v]:.3f}",
            per_seed(v, "kl", ".3f"),
            per_seed(v, "seconds", ".0f"),
        ]
        for v in means
    ]
    labels = dev_label_counts(spec, teacher_probs)
    return (
        f"The quickstart project (`examples/triage` as it ships: `task.scoring: {spec.task.scoring}`, "
        f"{spec.task.few_shot.per_label} shots per label, {spec.train.epochs} epochs, `keep: {spec.train.keep}`, "
        f"`precision: {spec.train.precision}`, `lr: {spec.train.optimizer.lr:g}`, "
        f"`temperature: {spec.train.distillation.temperature:g}`, `alpha: {spec.train.distillation.alpha:g}`; the "
        "compared setting varies), "
        "built once: generate and curate"
        + (f" ({build_seconds / 60:.1f} min)" if build_seconds is not None else "")
        + f". The student alone (no baseline) is trained with each {setting.title}, training seeds "
        f"{', '.join(map(str, seeds_run))}, and compared with the teacher on the {len(teacher_probs)} inputs of "
        f"`examples/triage/dev.jsonl`, labelled once by the same teacher ({labels}); their hand labels, "
        f"the test split and the gold set are not used.{note}\n\n"
        + markdown_table(
            [setting.title, "dev agreement per seed", "mean", "dev KL per seed", "train s per seed"], table
        )
        + f"\n\nRule: the highest mean development agreement; a tie keeps the shipped {setting.title}. "
        f"It picks **{setting.show(picked)}** (examples/triage ships {setting.show(shipped)}).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setting", choices=sorted(SETTINGS), default="temperature", help="Which training setting to compare."
    )
    parser.add_argument(
        "--work", type=Path, help="Project folder to build in (or reuse); default: a new temporary folder."
    )
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="Training time allowed for all trainings.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()

    import torch

    from distil.files import write_json_atomic

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="triage-choice-"))
    project, build_seconds = build_project(work)
    spec = project.spec
    setting = SETTINGS[args.setting]
    teacher_probs = teacher_on_dev(project, work / "dev_teacher_probs.json")

    plan = [(v, s) for s in SEEDS for v in setting.candidates]  # seed 0 of every value first
    done_path = work / "choice_rows.json"  # every finished training, so a rerun with a longer list adds to it
    done: dict[str, dict] = json.loads(done_path.read_text()) if done_path.is_file() else {}
    rows: list[dict] = []
    note = ""
    for value, seed in plan:
        spent = sum(r["seconds"] for r in rows)
        if rows and seed != SEEDS[0] and spent / len(rows) * len(plan) > args.budget_minutes * 60:
            note = (
                f" Time box: one training took {spent / len(rows):.0f} s on average, so {len(plan)} would exceed "
                f"{args.budget_minutes:g} minutes; only training seed {SEEDS[0]} ran."
            )
            break
        # the rest of the training spec is part of the key: a training kept from other settings is not reused
        key = f"{setting.name}={value:g} seed={seed} train={spec_digest(setting.apply(spec, value))}"
        if key not in done:  # a training already measured on this curated data is not run again
            done[key] = train_and_score(project, setting, value, seed, teacher_probs)
            write_json_atomic(done_path, done)
        rows.append(done[key])
        print(rows[-1], flush=True)

    body = section_body(spec, setting, rows, teacher_probs, build_seconds, note)
    print(body)
    if not args.no_write:
        # the temperature's section keeps its first name, so docs that link to it stay right
        write_section(
            "triage_student_choice" if setting.name == "temperature" else f"triage_student_choice_{setting.name}",
            f"Triage student: {setting.title} chosen on teacher-labelled development tickets",
            body,
            command="python benchmarks/triage_student_choice.py"
            + (f" --setting {setting.name}" if setting.name != "temperature" else "")
            + (f" --threads {args.threads}" if args.threads != 2 else ""),
        )


if __name__ == "__main__":
    main()
