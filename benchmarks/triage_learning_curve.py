"""The triage student's learning curve: agreement with the teacher against the number of teacher-labelled
training tickets, per student kind, measured on the development tickets.

A pool of training tickets is built once, the way the quickstart builds its data (``distil init --example
triage``; the teacher writes tickets from the seeds and labels them; curate filters, removes near-duplicates and
splits), with ``data.synthetic_budget`` raised so that the training split holds the largest size asked for. Only
where the curated tickets land differs from the example: ``data.split`` train 0.9 / validation 0.05 / test 0.05
and no probe pool, so fewer tickets are written for the same training split (neither test nor validation is read
here). The teacher's seconds to write and to label a ticket are timed while the pool is built.

Nested training sets are cut from the pool's training split (one fixed shuffle, interleaved by label so that
every prefix keeps the split's label shares; each set is the start of the next larger one). Each student kind is
trained alone on each set with the example's training settings (learning rate, temperature, epochs), training
seeds 0 and 1, and compared with the teacher on the 120 inputs of ``examples/triage/dev.jsonl``, labelled once by
the same teacher (their hand labels, the test split and the gold set are not used).

Every finished training is kept in ``<work>/curve_rows.json`` and the section is rewritten after each one, so a
run that is stopped keeps what it measured and a rerun trains only the missing cells.

    python benchmarks/triage_learning_curve.py --work /tmp/triage-curve
    python benchmarks/triage_learning_curve.py --work /tmp/triage-curve --sizes 8 16 --seeds 0 --epochs 1 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402
from _triage import dev_label_counts, dev_scores, teacher_on_dev, train_alone  # noqa: E402

SIZES = (60, 120, 240, 480)
SEEDS = (0, 1)
POOL_SPLIT = {"train": 0.9, "validation": 0.05, "test": 0.05}
SUBSET_SHUFFLE_SEED = 0
DEFAULT_KINDS = ["causal6", "encoder-lr1e-4", "encoder"]  # in the order trained at each size
TARGET = 0.90  # the agreement the extrapolation asks about


@dataclass(frozen=True)
class Kind:
    """One student kind: how ``student`` in the spec names it."""

    name: str
    title: str
    student: dict  # fields of distil.spec.models.StudentSpec, besides size_max_params
    lr: float | None = None  # the example's learning rate unless given


KINDS = {
    "causal6": Kind("causal6", "causal LM, teacher-layers:6", {"init": "teacher-layers:6"}),
    "encoder": Kind("encoder", "encoder, all-MiniLM-L6-v2", {"kind": "encoder"}),
    # the example's 2e-3 was chosen for the causal student; at it the encoder trained on 60 tickets stayed a constant
    # predictor (its loss did not fall), so the encoder also runs at 1e-4, a usual rate for fine-tuning a BERT-family
    # model (not tuned here)
    "encoder-lr1e-4": Kind("encoder-lr1e-4", "encoder, all-MiniLM-L6-v2, lr 1e-4", {"kind": "encoder"}, lr=1e-4),
    "causal4": Kind("causal4", "causal LM, teacher-layers:4", {"init": "teacher-layers:4"}),
    "causal6-lora": Kind(
        "causal6-lora", "causal LM, teacher-layers:6, LoRA", {"init": "teacher-layers:6", "lora": True}
    ),
    "encoder-lora": Kind("encoder-lora", "encoder, all-MiniLM-L6-v2, LoRA", {"kind": "encoder", "lora": True}),
}


def load() -> tuple[float, float, float]:
    return os.getloadavg()


# --- the pool ------------------------------------------------------------------------------------------------


def pool_spec(spec, budget: int):  # noqa: ANN001, ANN201 - a Spec
    """The example's spec with the synthetic budget raised and the curated tickets sent mostly to train."""
    data = spec.data.model_copy(update={"synthetic_budget": budget, "split": dict(POOL_SPLIT), "probe": 0.0})
    return spec.model_copy(update={"data": data})


def build_pool(work: Path, budget: int, needed: int) -> tuple:
    """The pool project and its build record, with at least ``needed`` tickets in its training split.

    Each attempt is its own project, ``work/pool-<budget>``, built once; when curate leaves too few training
    tickets, the next attempt raises the budget by the shortfall over the share that reached training (and a
    tenth more), starting from the previous attempt's teacher-call cache so only the new tickets are asked for.
    The record (``pool.json``) carries every attempt's counts, the teacher's timings and the load average."""
    from distil.spec.io import load_project

    attempts: list[dict] = []
    previous = None
    while True:
        folder = work / f"pool-{budget}"
        record_path = folder / "pool.json"
        if not record_path.is_file():
            if previous is not None and not call_cache_path(folder).is_file():
                call_cache_path(folder).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(call_cache_path(previous), call_cache_path(folder))
            build_attempt(folder, budget)
        record = json.loads(record_path.read_text())
        attempts.append(record)
        train = record["curated"]["train"]
        print(f"pool-{budget}: {train} training tickets (need {needed})", flush=True)
        if train >= needed:
            break
        previous = folder
        budget += int(np.ceil((needed - train) / (train / record["curated"]["raw"]) * 1.1))
    pool = {**attempts[-1], **{k: sum(a[k] for a in attempts) for k in ("write_s", "label_s", "written", "labelled")}}
    pool["attempts"] = [a["budget"] for a in attempts]
    return load_project(folder / "distil.yaml"), pool


def call_cache_path(project_folder: Path) -> Path:
    return project_folder / ".distil" / "cache" / "teacher_calls.sqlite"


def build_attempt(folder: Path, budget: int) -> None:
    """Init the example in ``folder`` with ``budget``, write and label the tickets (each phase timed), curate;
    the record goes to ``folder/pool.json``."""
    from distil.data.curate import curate
    from distil.data.generate import call_cache, generate_dataset, synthetic_items
    from distil.data.sources import read_seed_inputs
    from distil.files import write_json_atomic
    from distil.spec.gate import lock_gate
    from distil.spec.io import load_project
    from distil.spec.templates import init_project, write_spec
    from distil.teachers.registry import build_teacher

    spec_path = folder / "distil.yaml"
    if not spec_path.is_file():
        init_project(folder, example="triage")
    write_spec(spec_path, pool_spec(load_project(spec_path).spec, budget))
    project = load_project(spec_path)
    spec = project.spec
    lock_gate(project, spec.roles.sponsor)
    cache = call_cache(project)
    record: dict = {"budget": budget, "load_start": load()}

    started = time.perf_counter()
    teacher = build_teacher(project, actor=spec.roles.driver)
    record["teacher_load_s"] = time.perf_counter() - started

    # the teacher writes every synthetic ticket first (timed alone); generate then finds them in the cache
    before, started = len(cache), time.perf_counter()
    seeds = read_seed_inputs(project.path(spec.data.seeds), spec)
    synthetic_items(project, teacher, seeds, budget)
    record.update(write_s=time.perf_counter() - started, written=len(cache) - before, load_written=load())
    print(f"wrote {record['written']} tickets in {record['write_s']:.0f} s, load {load()}", flush=True)

    before, started = len(cache), time.perf_counter()
    generated = generate_dataset(project, teacher=teacher, actor=spec.roles.driver, show_progress=False)
    record.update(label_s=time.perf_counter() - started, labelled=len(cache) - before, load_labelled=load())
    print(f"labelled {record['labelled']} tickets in {record['label_s']:.0f} s, load {load()}", flush=True)

    curated = curate(project, actor=spec.roles.driver)
    record.update(generated=generated.counts, curated=curated.counts, dataset_hash=curated.dataset_hash)
    print(f"generate {generated.counts}, curate {curated.counts}", flush=True)
    write_json_atomic(folder / "pool.json", record)


# --- nested training sets ----------------------------------------------------------------------------------------


def nested_order(labels: list[str], seed: int) -> list[int]:
    """Indices of one fixed shuffle, interleaved by label so that every prefix keeps the labels' shares.

    Each item is placed at (its rank among its label's items + 0.5) / that label's count; ties keep the shuffle."""
    rng = random.Random(seed)
    shuffled = list(range(len(labels)))
    rng.shuffle(shuffled)
    seen: dict[str, int] = {}
    place = {}
    counts = {label: labels.count(label) for label in set(labels)}
    for position, i in enumerate(shuffled):
        rank = seen.get(labels[i], 0)
        seen[labels[i]] = rank + 1
        place[i] = ((rank + 0.5) / counts[labels[i]], position)
    return sorted(shuffled, key=place.__getitem__)


def subset_project(pool, size: int, work: Path):  # noqa: ANN001, ANN201 - a Project
    """A project whose newest curated dataset holds the first ``size`` training tickets of the pool (validation and
    test as the pool's); one folder per size under ``work/sizes``, made once."""
    from distil.data.curate import write_curated
    from distil.runs import latest_curated
    from distil.spec.io import Project
    from distil.spec.templates import write_spec

    folder = work / "sizes" / f"n{size}"
    project = Project((folder / "distil.yaml").resolve(), pool.spec)
    if project.ledger_path.is_file() and project.ledger.latest("datasets", "stage = ?", ("curated",)):
        return project
    data = latest_curated(pool)
    train = data.records("train")
    if size > len(train):
        raise SystemExit(f"the pool's training split holds {len(train)} tickets, fewer than {size}: raise --budget")
    order = nested_order([r.label or "" for r in train], SUBSET_SHUFFLE_SEED)
    write_spec(folder / "distil.yaml", pool.spec)
    splits = {"train": [train[i] for i in order[:size]], **{s: data.records(s) for s in ("validation", "test")}}
    write_curated(project, splits)
    return project


# --- one cell --------------------------------------------------------------------------------------------------


def train_cell(project, kind: Kind, seed: int, epochs: int, teacher_probs: np.ndarray) -> dict:  # noqa: ANN001
    """Train ``kind`` alone on the project's training set with this seed; its dev agreement and seconds."""
    from distil.spec.io import Project
    from distil.spec.models import StudentSpec

    spec = project.spec
    student = StudentSpec.model_validate({**kind.student, "size_max_params": spec.student.size_max_params})
    optimizer = spec.train.optimizer.model_copy(update={"lr": kind.lr or spec.train.optimizer.lr})
    train = spec.train.model_copy(update={"seed": seed, "epochs": epochs, "optimizer": optimizer})
    variant = Project(project.spec_path, spec.model_copy(update={"student": student, "train": train}))
    run_id = f"curve-{kind.name}-s{seed}-e{epochs}"
    shutil.rmtree(variant.runs_dir / run_id, ignore_errors=True)  # a run stopped half way starts again
    load_before = load()[0]
    folder, seconds = train_alone(variant, run_id)
    scores = dev_scores(folder, teacher_probs)
    shutil.rmtree(folder.parent / "checkpoints", ignore_errors=True)  # the loop's resume state, hundreds of MB
    return {**scores, "seconds": seconds, "load": [load_before, load()[0]]}


# --- the section ---------------------------------------------------------------------------------------------


def extrapolate(sizes: list[int], means: list[float]) -> str:
    """Where a straight line through (log2 size, mean agreement) reaches TARGET, said as an extrapolation, and
    what the last step gained (a curve that has flattened makes the line overstate what more tickets buy)."""
    if len(sizes) < 2:
        return "too few sizes to extrapolate"
    slope, intercept = np.polyfit(np.log2(sizes), means, 1)
    if max(means) >= TARGET:
        first = min(s for s, m in zip(sizes, means, strict=True) if m >= TARGET)
        return f"{slope:+.3f} per doubling; {TARGET:.2f} reached at {first} tickets"
    if slope < 1e-6:  # flat (or falling) within rounding: no size reaches the target along it
        return f"no gain per doubling ({slope:+.3f}): no extrapolation"
    needed = 2 ** ((TARGET - intercept) / slope)
    reach = (
        f"{TARGET:.2f} at about {needed:,.0f} tickets by extrapolation"
        if needed <= 100 * max(sizes)
        else f"{TARGET:.2f} only beyond 100 times the largest size"
    )
    said = f"{slope:+.3f} per doubling; {reach}"
    if len(sizes) > 2:
        last = means[-1] - means[-2]
        said += f"; from {sizes[-2]} to {sizes[-1]} it moved {last:+.3f}"
        if last < slope / 2:
            said += ", so the curve has flattened (or fallen) and the line likely overstates what more tickets buy"
    return said


def section_body(spec, pool: dict, rows: dict, plan: dict, teacher_probs: np.ndarray, epochs: int) -> str:  # noqa: ANN001
    """The docs/benchmarks.md section: the pool, the teacher's cost per ticket, the curve per kind and a reading."""
    counts = pool["curated"]
    train_pool = counts["train"]
    write_per = pool["write_s"] / max(pool["written"], 1)
    label_per = pool["label_s"] / max(pool["labelled"], 1)
    synthetic = pool["generated"].get("synthetic", 0)
    per_train_ticket = (pool["budget"] * write_per + synthetic * label_per) / max(plan["train_synthetic"], 1)
    table, curves = [], {}
    for kind_name, sizes in plan["kinds"].items():
        kind = KINDS[kind_name]
        for size in sizes:
            cells = [rows.get(cell_key(pool, kind_name, size, seed, epochs)) for seed in plan["seeds"]]
            done = [c for c in cells if c]
            mean = float(np.mean([c["agreement"] for c in done])) if done else None
            if mean is not None:
                curves.setdefault(kind_name, []).append((size, mean, len(done) < len(cells)))
            table.append(
                [
                    kind.title,
                    size,
                    " / ".join(f"{c['agreement']:.3f}" if c else "not run" for c in cells),
                    f"{mean:.3f}" if mean is not None else "—",
                    " / ".join(f"{c['kl']:.3f}" if c else "—" for c in cells),
                    " / ".join(f"{c['seconds']:.0f}" if c else "—" for c in cells),
                    " / ".join(f"{c['load'][0]:.1f}" if c else "—" for c in cells),
                ]
            )
    missing = sum(
        1
        for kind_name, sizes in plan["kinds"].items()
        for size in sizes
        for seed in plan["seeds"]
        if not rows.get(cell_key(pool, kind_name, size, seed, epochs))
    )
    lines = []
    for kind_name, points in curves.items():
        sizes, means = [p[0] for p in points], [p[1] for p in points]
        best = max(points, key=lambda p: p[1])
        partial = [str(p[0]) for p in points if p[2]]
        lines.append(
            f"- {KINDS[kind_name].title}: "
            + ", ".join(f"{m:.3f} at {n}" for n, m, _ in points)
            + f" tickets (best {best[1]:.3f} at {best[0]}"
            + (f"; at {', '.join(partial)} not every seed ran" if partial else "")
            + f"); a line through log2(size): {extrapolate(sizes, means)}."
        )
    from distil.evaluate.metrics import wilson_interval

    majority = float(np.bincount(teacher_probs.argmax(axis=1)).max() / len(teacher_probs))
    n_dev = len(teacher_probs)
    low, high = wilson_interval(round(0.85 * n_dev), n_dev)
    lines.append(
        f"- One training's agreement is a rate on {n_dev} tickets: {round(0.85 * n_dev)} of {n_dev} (0.850) has the "
        f"Wilson 95% interval [{low:.3f}, {high:.3f}], so cells a few hundredths apart are not told apart."
    )
    constant = [
        f"{KINDS[r['kind']].title} at {r['size']} (seed {r['seed']})"
        for r in sorted(rows.values(), key=lambda r: (r["kind"], r["size"], r["seed"]))
        if r.get("pool") == pool["dataset_hash"] and r["kind"] in plan["kinds"] and r["agreement"] <= majority + 0.02
    ]
    lines.append(
        f"- Always answering the teacher's most common development label would agree {majority:.3f}"
        + (f"; no better than that (it learned nothing): {'; '.join(constant)}." if constant else ".")
    )
    shared = set.intersection(*(set(p[0] for p in points) for points in curves.values())) if curves else set()
    if len(curves) > 1 and shared:
        at = max(shared)
        ranked = sorted(((m, k) for k, points in curves.items() for n, m, _ in points if n == at), reverse=True)
        lines.append(
            f"- At {at} tickets, the largest size every kind reached: "
            + "; ".join(f"{KINDS[k].title}: {m:.3f}" for m, k in ranked)
            + "."
        )
    spent = sum(r["seconds"] for r in rows.values() if r.get("pool") == pool["dataset_hash"])
    return (
        f"The pool: `examples/triage` as it ships (`synthetic: teacher`, its filters and near-duplicate removal), "
        f"`data.synthetic_budget: {pool['budget']}`, curated tickets split train 0.9 / validation 0.05 / test 0.05 "
        f"and no probe pool so the training split is large enough: generate kept "
        f"{' and '.join(f'{n} {source}' for source, n in pool['generated'].items())} tickets, curate removed "
        f"{', '.join(f'{k[8:]} {v}' for k, v in counts.items() if k.startswith('removed_') and v)} and kept "
        f"{counts['curated']}, of which {train_pool} in the training split (seeds included, all teacher-labelled). "
        f"Nested training sets are its first {' / '.join(map(str, plan['sizes']))} tickets after one fixed shuffle "
        f"interleaved by "
        f"label (seed {SUBSET_SHUFFLE_SEED}); each set is the start of the next.\n\n"
        f"The teacher's cost per ticket, on this machine with torch on 1 thread: writing {write_per:.2f} s "
        f"({pool['written']} tickets written in {pool['write_s'] / 60:.1f} min, load average "
        f"{pool['load_start'][0]:.1f} before, {pool['load_written'][0]:.1f} after), labelling {label_per:.2f} s "
        f"({pool['labelled']} labelled in {pool['label_s'] / 60:.1f} min, load after {pool['load_labelled'][0]:.1f}); "
        f"the teacher loads once in {pool['teacher_load_s']:.0f} s. The teacher was asked to write {pool['budget']} "
        f"tickets; {synthetic} were new texts and labelled, and {plan['train_synthetic']} reached the training "
        f"split, so one more training ticket costs about {per_train_ticket:.1f} s of teacher time (with the "
        f"example's split, 0.63 of the curated tickets to train instead of 0.9: about "
        f"{per_train_ticket * 0.9 / 0.63:.1f} s).\n\n"
        f"Each kind is trained alone with the example's settings (`lr: {spec.train.optimizer.lr:g}` unless its row "
        f"names another, "
        f"`temperature: {spec.train.distillation.temperature:g}`, `epochs: {epochs}` at every size, so a larger set "
        f"also gets proportionally more optimiser steps; `keep: {spec.train.keep}`), training seeds "
        f"{', '.join(map(str, plan['seeds']))}, torch on {plan['threads']} thread(s), and compared with the teacher "
        f"on the {len(teacher_probs)} inputs of `examples/triage/dev.jsonl`, labelled once by the same teacher "
        f"({dev_label_counts(spec, teacher_probs)}); their hand labels, the test split and the gold set are not "
        f"used. Training seconds ran on 2 cores shared with other work (the load average at each start is shown), "
        f"so they compare only roughly; {spent / 60:.0f} min of training in all."
        + (f" {missing} training(s) did not run in the time given: marked *not run*." if missing else "")
        + "\n\n"
        + markdown_table(
            ["student", "training tickets", "dev agreement per seed", "mean", "dev KL per seed", "train s", "load"],
            table,
        )
        + "\n\nReading (the means over the seeds; a line fitted to a few points, beyond them an extrapolation, "
        "not a measurement):\n\n" + ("\n".join(lines) if lines else "- no size is complete for every seed yet.") + "\n"
    )


def cell_key(pool: dict, kind: str, size: int, seed: int, epochs: int) -> str:
    return f"{pool['dataset_hash'][7:19]} {kind} n={size} seed={seed} epochs={epochs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Folder to build the pool in (or reuse); default: a new one.")
    parser.add_argument("--budget", type=int, default=600, help="data.synthetic_budget of the pool.")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="Training set sizes.")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="Training seeds.")
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=DEFAULT_KINDS, help="Student kinds.")
    parser.add_argument("--epochs", type=int, help="Epochs at every size (default: the example's).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy machine).")
    parser.add_argument("--pool-only", action="store_true", help="Build the pool and stop.")
    parser.add_argument(
        "--report-only", action="store_true", help="Train nothing: write the section from the kept trainings."
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()

    import torch

    from distil.files import write_json_atomic
    from distil.runs import latest_curated

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="triage-curve-"))
    pool_project, pool = build_pool(work, args.budget, max(args.sizes))
    if args.pool_only:
        return
    spec = pool_project.spec
    epochs = args.epochs or spec.train.epochs
    teacher_probs = teacher_on_dev(pool_project, work / "dev_teacher_probs.json")
    sizes = sorted(args.sizes)
    train_synthetic = sum(r.source == "synthetic" for r in latest_curated(pool_project).records("train"))
    plan = {
        "kinds": {k: sizes for k in args.kinds},
        "sizes": sizes,
        "seeds": args.seeds,
        "threads": args.threads,
        "train_synthetic": train_synthetic,
    }
    rows_path = work / "curve_rows.json"
    rows: dict[str, dict] = json.loads(rows_path.read_text()) if rows_path.is_file() else {}

    def write(body: str) -> None:
        if not args.no_write:
            write_section(
                "triage_learning_curve",
                "Triage student: the learning curve on teacher-labelled development tickets",
                body,
                command="python benchmarks/triage_learning_curve.py"
                + (f" --budget {args.budget}" if args.budget != 600 else "")
                + (f" --kinds {' '.join(args.kinds)}" if args.kinds != DEFAULT_KINDS else ""),
            )

    # seed by seed, so a stopped run has every cell of the first seed
    for seed in args.seeds:
        for size in sizes:
            project = subset_project(pool_project, size, work)
            for kind in args.kinds:
                key = cell_key(pool, kind, size, seed, epochs)
                if key in rows or args.report_only:
                    continue
                print(f"training {key}, load {load()}", flush=True)
                cell = train_cell(project, KINDS[kind], seed, epochs, teacher_probs)
                rows[key] = {"pool": pool["dataset_hash"], "kind": kind, "size": size, "seed": seed, **cell}
                write_json_atomic(rows_path, rows)
                print(rows[key], flush=True)
                write(section_body(spec, pool, rows, plan, teacher_probs, epochs))
    body = section_body(spec, pool, rows, plan, teacher_probs, epochs)
    print(body)
    write(body)


if __name__ == "__main__":
    main()
