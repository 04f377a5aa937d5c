"""What `distil iterate` rounds add on the triage example, against the same number of untargeted tickets.

From one built quickstart project (the cadence run once: its run is "round 0"), each seed runs two arms in copies
of it, each for ``--rounds`` rounds:

* targeted: ``distil iterate`` as shipped: the student's failures on the validation split and the probe pool are
  shown to the teacher, which writes tickets like them;
* untargeted: ``distil iterate --untargeted --budget K``: the same number K of new tickets the targeted round of
  that seed labelled, written the plain way (the seeds under the example's ``synthetic_header``).

Both go through the same screening, labelling, curation (locked test split; near-duplicates of test and gold
removed) and retraining with the example's shipped recipe. The seed is the teacher's writing seed and
``train.seed``. The test split and the gold set only report: nothing is chosen on them.

Every finished round is kept in ``<work>/rows-<arm>.jsonl``; a rerun skips finished rounds and resumes an
interrupted one (the teacher's calls are cached, the cadence resumes its training). ``--arm both`` runs the two
arms as two processes (the untargeted one waits for each targeted round's count) and writes the section of
docs/benchmarks.md; ``--report-only`` writes it from the kept rows, marking what has not finished.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

ARMS = ("targeted", "untargeted")
SEEDS = (0, 1, 2)
POLL_S = 20


# --- the project copies --------------------------------------------------------------------------------------


def project_copy(start: Path, work: Path, arm: str, seed: int) -> Path:
    """``<work>/<arm>-s<seed>``: a copy of the built start project with ``train.seed`` set (made once)."""
    from distil.ledger.keys import project_keys_dir
    from distil.spec.io import load_project
    from distil.spec.templates import write_spec

    folder = work / f"{arm}-s{seed}"
    if (folder / "distil.yaml").is_file():
        return folder / "distil.yaml"
    partial = work / f".{arm}-s{seed}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    # the start run's checkpoints only resume its training, which finished
    shutil.copytree(start, partial, symlinks=True, ignore=shutil.ignore_patterns("checkpoints"))
    state = partial / ".distil" / "cadence.json"  # its step outputs name the start folder's paths
    state.write_text(state.read_text(encoding="utf-8").replace(str(start), str(folder)), encoding="utf-8")
    spec_path = partial / "distil.yaml"
    spec = load_project(spec_path).spec
    write_spec(spec_path, spec.model_copy(update={"train": spec.train.model_copy(update={"seed": seed})}))
    partial.rename(folder)
    if project_keys_dir(start).is_dir():  # quickstart's throwaway keys are kept per project folder, outside it
        shutil.copytree(project_keys_dir(start), project_keys_dir(folder), dirs_exist_ok=True)
    return folder / "distil.yaml"


# --- one round -----------------------------------------------------------------------------------------------


def scores(run: Any) -> dict[str, Any]:
    """The student's agreement with the teacher on the locked test split and on the gold set, as evaluate wrote
    them (value, 95% interval, n), and its gold accuracy."""
    student = json.loads(run.evaluation.read_text(encoding="utf-8"))["student"]
    gold = student.get("gold") or {}
    return {
        "test_agreement": student.get("agreement"),
        "test_ci": student.get("agreement_ci"),
        "test_n": student.get("n"),
        "gold_agreement": gold.get("agreement"),
        "gold_ci": gold.get("agreement_ci"),
        "gold_n": gold.get("n"),
        "gold_accuracy": gold.get("accuracy"),
    }


def start_row(start: Path) -> dict[str, Any]:
    from distil.runs import latest_run
    from distil.spec.io import load_project

    run = latest_run(load_project(start / "distil.yaml"))
    return {"arm": "start", "seed": None, "round": 0, "to_run": run.run_id, **scores(run)}


@functools.cache
def code_commit() -> str:
    """The commit of the code this process runs (read once, when its first round starts; ``+``: with changes)."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True)
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def run_round(spec_path: Path, arm: str, seed: int, budget: int | None) -> dict[str, Any]:
    """One `distil iterate` round in the copy, timed: teacher seconds are the round's time outside the cadence.

    Evaluate times 20 requests at batch 1 instead of 100: latency is not what this measures."""
    from distil.iterate import iterate_round
    from distil.runs import RunDir
    from distil.spec.io import load_project

    project = load_project(spec_path)
    started = time.perf_counter()
    result = iterate_round(project, budget=budget, untargeted=arm == "untargeted", seed=seed, threads=1, requests=20)
    wall = time.perf_counter() - started
    assert result.cadence is not None and result.cadence.run_id
    steps = {o.step: o for o in result.cadence.outcomes}
    run = RunDir(project, result.cadence.run_id)
    shutil.rmtree(run.folder / "checkpoints", ignore_errors=True)  # finished: nothing to resume
    return {
        "arm": arm,
        "seed": seed,
        "round": result.round,
        "from_run": result.from_run,
        "to_run": result.cadence.run_id,
        "failures": len(result.failures),
        "budget": budget,
        "labelled": result.labelled,
        "dropped": result.dropped,
        "train_items": steps["curate"].output.get("counts", {}).get("train"),
        "teacher_s": wall - sum(o.seconds for o in steps.values()),
        "train_s": steps["train"].seconds,
        "evaluate_s": steps["evaluate"].seconds,
        "round_s": wall,
        "load": os.getloadavg(),
        "commit": code_commit(),
        **scores(run),
    }


def row_from_ledger(spec_path: Path, arm: str, seed: int, round_: int) -> dict[str, Any] | None:
    """The row of a round the copy's ledger records as done but the rows file lacks (stopped between the two):
    its scores and counts, without timings."""
    from distil.runs import RunDir
    from distil.spec.io import load_project

    project = load_project(spec_path)
    done = [e.payload for e in project.ledger.events(kind="iteration") if e.payload["round"] == round_]
    if not done:
        return None
    it = done[-1]
    run = RunDir(project, it["to_run"])
    shutil.rmtree(run.folder / "checkpoints", ignore_errors=True)
    return {
        "arm": arm,
        "seed": seed,
        "round": round_,
        "from_run": it["from_run"],
        "to_run": it["to_run"],
        "failures": it["failures"],
        "budget": None,
        "labelled": it["labelled"],
        "dropped": it["dropped"],
        "train_items": None,
        "teacher_s": None,
        "train_s": None,
        "evaluate_s": None,
        "round_s": None,
        "load": None,
        **scores(run),
    }


# --- the rows file -------------------------------------------------------------------------------------------


def read_rows(work: Path) -> list[dict[str, Any]]:
    rows = []
    for arm in ARMS:
        path = work / f"rows-{arm}.jsonl"
        if path.is_file():
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def keep_row(work: Path, row: dict[str, Any]) -> None:
    from distil.files import write_text_atomic

    path = work / f"rows-{row['arm']}.jsonl"
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_text_atomic(path, old + json.dumps(row, sort_keys=True) + "\n")


def finished(rows: list[dict[str, Any]], arm: str, seed: int, round_: int) -> dict[str, Any] | None:
    return next((r for r in rows if (r["arm"], r["seed"], r["round"]) == (arm, seed, round_)), None)


def targeted_count(work: Path, seed: int, round_: int) -> int:
    """How many new tickets the targeted round ``round_`` of ``seed`` labelled: from its kept row, else from its
    project's ledger as soon as its labelled shard is recorded (before it trains); waits until one says."""
    from distil.spec.io import load_project

    while True:
        row = finished(read_rows(work), "targeted", seed, round_)
        if row is not None:
            return int(row["labelled"])
        spec_path = work / f"targeted-s{seed}" / "distil.yaml"
        if spec_path.is_file():
            ledger = load_project(spec_path).ledger
            # one per labelled shard: a resumed round records its (same) shard again
            shards = {
                tuple(e.payload["shards"]): e.payload["counts"]["targeted"]
                for e in ledger.events(kind="dataset.generated")
                if "targeted" in e.payload.get("counts", {})
            }
            counts = list(shards.values())
            if len(counts) >= round_:
                return int(counts[round_ - 1])
        time.sleep(POLL_S)


def run_arm(start: Path, work: Path, arm: str, seeds: list[int], rounds: int, budget: int | None) -> None:
    import torch

    torch.set_num_threads(1)
    code_commit()  # the code loaded now is the code every round of this process runs
    for seed in seeds:
        spec_path = project_copy(start, work, arm, seed)
        for round_ in range(1, rounds + 1):
            if finished(read_rows(work), arm, seed, round_):
                continue
            row = row_from_ledger(spec_path, arm, seed, round_)
            if row is None:
                count = targeted_count(work, seed, round_) if arm == "untargeted" else budget
                print(f"{arm} seed {seed} round {round_}: budget {count}", flush=True)
                row = run_round(spec_path, arm, seed, count)
            assert row["round"] == round_, f"the copy ran round {row['round']}, expected {round_}"
            keep_row(work, row)
            print(json.dumps(row), flush=True)


# --- the report ----------------------------------------------------------------------------------------------


def value_ci(value: float | None, ci: list[float] | None, n: int | None) -> str:
    if value is None:
        return "not finished"
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
    return f"{value:.3f}{interval} (n={n})"


def overlap(a: list[float] | None, b: list[float] | None) -> str:
    if not a or not b:
        return ""
    return "overlap" if a[0] <= b[1] and b[0] <= a[1] else "apart"


def report(work: Path, seeds: list[int], rounds: int) -> str:
    rows = read_rows(work)
    start = json.loads((work / "start.json").read_text(encoding="utf-8"))
    table = [
        [
            "start (round 0)",
            "all",
            "",
            "",
            "",
            value_ci(start["test_agreement"], start["test_ci"], start["test_n"]),
            value_ci(start["gold_agreement"], start["gold_ci"], start["gold_n"]),
            "",
            "",
            "",
        ]
    ]
    for round_ in range(1, rounds + 1):
        for seed in seeds:
            for arm in ARMS:
                r = finished(rows, arm, seed, round_) or {}
                table.append(
                    [
                        f"{arm}, round {round_}",
                        seed,
                        r.get("failures", ""),
                        r.get("labelled", "not finished"),
                        r.get("train_items") or "",
                        value_ci(r.get("test_agreement"), r.get("test_ci"), r.get("test_n")),
                        value_ci(r.get("gold_agreement"), r.get("gold_ci"), r.get("gold_n")),
                        _seconds(r.get("teacher_s")),
                        _seconds(r.get("train_s")),
                        ", ".join(f"{x:.1f}" for x in r["load"]) if r.get("load") else "",
                    ]
                )
    paired = []
    for round_ in range(1, rounds + 1):
        for split in ("test", "gold"):
            diffs, overlaps = [], []
            for seed in seeds:
                t, u = finished(rows, "targeted", seed, round_), finished(rows, "untargeted", seed, round_)
                if t and u:
                    diffs.append((seed, t[f"{split}_agreement"] - u[f"{split}_agreement"]))
                    overlaps.append(overlap(t[f"{split}_ci"], u[f"{split}_ci"]))
            mean = sum(d for _, d in diffs) / len(diffs) if diffs else None
            t_mean = _mean(rows, "targeted", round_, split, [s for s, _ in diffs])
            u_mean = _mean(rows, "untargeted", round_, split, [s for s, _ in diffs])
            paired.append(
                [
                    round_,
                    split,
                    f"{len(diffs)} of {len(seeds)}",
                    "" if t_mean is None else f"{t_mean:.3f}",
                    "" if u_mean is None else f"{u_mean:.3f}",
                    "not finished" if mean is None else f"{mean:+.3f}",
                    ", ".join(f"{s}: {d:+.3f}" for s, d in diffs),
                    ", ".join(overlaps),
                    paired_items(work, rows, seeds, round_, split),
                ]
            )
    return (
        f"Start: run {start['to_run']}. "
        "Each round: `distil iterate` in a copy of one built quickstart project (its run is round 0, trained with "
        "`train.seed` 0), the example's shipped recipe. Targeted: failures mined on the validation split and the "
        "probe pool (the student's disagreements with the teacher, plus as many near misses as a slice under the "
        "per-slice floor, and under the student's agreement on all mined items, has disagreements) shown to the "
        "teacher. Untargeted: `distil iterate --untargeted --budget K`, K the number of "
        "tickets the targeted round of that seed labelled, written the plain way. The seed is the teacher's writing "
        "seed and `train.seed`. Agreement is the student's top label against the teacher's, on the locked test "
        "split and on the gold set, with evaluate's 95% interval; neither chose anything. Teacher seconds: writing "
        "and labelling (the round's time outside the cadence; calls already in the project's call cache, from an "
        "earlier attempt at the same round stopped part way, cost nothing and are not counted); train seconds: the "
        "cadence's train step (student and "
        "hard-label baseline).\n\n"
        + markdown_table(
            [
                "round",
                "seed",
                "failures mined (validation + probe)",
                "new tickets labelled",
                "train items after curation",
                "test agreement [95%]",
                "gold agreement [95%]",
                "teacher s",
                "train s",
                "load (1, 5, 15 min)",
            ],
            table,
        )
        + "\n\nTargeted minus untargeted, paired by seed (the same seed's writing and training):\n\n"
        + markdown_table(
            [
                "round",
                "set",
                "seeds finished",
                "targeted mean",
                "untargeted mean",
                "mean difference",
                "per seed",
                "the two 95% intervals, per seed",
                "per-item difference, mean over seeds [paired bootstrap 95%]",
            ],
            paired,
        )
        + "\n"
    )


def item_agreement(work: Path, row: dict[str, Any], split: str) -> dict[str, float]:
    """Per item of ``split`` (the locked test split or the gold set): 1 where the round's student gives the
    teacher's top label, from the predictions evaluate kept."""
    from distil.evaluate.predictions import paired

    predictions = work / f"{row['arm']}-s{row['seed']}" / ".distil" / "runs" / row["to_run"] / "predictions.parquet"
    return {s["item_id"]: float(s["label"] == t["label"]) for t, s in paired(predictions, split, "student")}


def paired_items(work: Path, rows: list[dict[str, Any]], seeds: list[int], round_: int, split: str) -> str:
    """Targeted minus untargeted agreement per item, averaged over the seeds where both arms finished, with a
    paired bootstrap 95% interval over the items (the items are the same in both arms: the split is locked)."""
    import numpy as np

    from distil.evaluate.metrics import paired_bootstrap

    per_seed = []
    for seed in seeds:
        t, u = finished(rows, "targeted", seed, round_), finished(rows, "untargeted", seed, round_)
        if t and u:
            a, b = item_agreement(work, t, split), item_agreement(work, u, split)
            per_seed.append({i: a[i] - b[i] for i in a.keys() & b.keys()})
    if not per_seed:
        return ""
    items = sorted(set.intersection(*(set(d) for d in per_seed)))
    d = np.array([np.mean([seed[i] for seed in per_seed]) for i in items])
    boot = paired_bootstrap(d)
    return f"{boot['value']:+.3f} [{boot['lo']:+.3f}, {boot['hi']:+.3f}] (n={boot['n']} items)"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _mean(rows: list[dict[str, Any]], arm: str, round_: int, split: str, seeds: list[int]) -> float | None:
    values = [finished(rows, arm, s, round_)[f"{split}_agreement"] for s in seeds]  # type: ignore[index]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=Path, required=True, help="A built quickstart project folder (not changed).")
    parser.add_argument("--work", type=Path, required=True, help="Folder for the copies and the kept rows.")
    parser.add_argument("--arm", choices=(*ARMS, "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=None, help="Targeted rounds' --budget (default: iterate's).")
    parser.add_argument("--report-only", action="store_true", help="Write the section from the kept rows.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()
    start, work = args.start.resolve(), args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "start.json").is_file():
        (work / "start.json").write_text(json.dumps(start_row(start)), encoding="utf-8")
    if args.arm != "both":
        run_arm(start, work, args.arm, args.seeds, args.rounds, args.budget)
        return
    if not args.report_only:
        common = [
            "--start",
            str(start),
            "--work",
            str(work),
            "--rounds",
            str(args.rounds),
            "--seeds",
            *map(str, args.seeds),
            *(["--budget", str(args.budget)] if args.budget is not None else []),
        ]
        workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--arm", arm, *common],
                stdout=open(work / f"{arm}.log", "a"),
                stderr=subprocess.STDOUT,
            )
            for arm in ARMS
        ]
        codes = [w.wait() for w in workers]
        print(f"workers exited {codes}; logs in {work}")
    body = report(work, args.seeds, args.rounds)
    print(body)
    if not args.no_write:
        write_section(
            "iterate_gain",
            "Targeted iterate rounds against untargeted tickets on the triage example",
            body,
            command="python benchmarks/iterate_gain.py --start <built quickstart project> --work <folder>"
            + ("" if args.seeds == list(SEEDS) else " --seeds " + " ".join(map(str, args.seeds)))
            + ("" if args.rounds == 2 else f" --rounds {args.rounds}"),
        )


if __name__ == "__main__":
    main()
