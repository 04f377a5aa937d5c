"""The triage teacher's prompt, chosen on the development file: accuracy and labelling speed of each variant.

The embedded teacher (SmolLM2-135M-Instruct) is loaded once; each variant sets the example's ``task``
section (scoring, how many shots, calibration on or off and its inputs) and is scored exactly as
``distil generate`` would label: in chunks of 16 tickets, the prompt's prefixes run once. Its cost is
seconds per ticket, the median over those chunks (the first chunk also pays for the prefixes and the
calibration, once per run). The choice is made on ``examples/triage/dev.jsonl`` (120 hand-labelled
tickets the cadence never reads) by a fixed rule: the highest development accuracy, a tie going to the
variant that runs fewer tokens per ticket, then to the one the example ships. The gold set is scored too, in a
column marked report only: it never chooses. Shots come from the seeds only.

    python benchmarks/teacher_prompt.py                # every variant, writes its docs/benchmarks.md section
    python benchmarks/teacher_prompt.py --quick        # three variants, to estimate the time of the full run
    python benchmarks/teacher_prompt.py --gold picked  # gold (report only) for the picked and shipped variants
    python benchmarks/teacher_prompt.py --threads 1    # a fixed thread count instead of teachers[].threads: auto
    python benchmarks/teacher_prompt.py --quick --source gguf:FOLDER#FILE.gguf   # another local teacher, printed

Beside the single prompts, averages of several prompts' label distributions (each prompt with its own shots) are
scored on the development file only and reported in a second table: never candidates, since each prompt adds its
whole labelling cost to every ticket.

Every variant is scored on the development file first, so the choice is made before any gold ticket
is labelled. Each score is kept in a cache file keyed by what it depends on (teacher, task settings,
seeds, the scored file), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "triage"
DEV = EXAMPLE / "dev.jsonl"

# several answer words per label (the direct score sums their probabilities; channel scoring writes the first)
WORDS = {
    "labels": [
        {"name": "billing", "words": ["billing", "payment", "refund", "invoice"]},
        {"name": "technical", "words": ["technical", "bug", "error", "crash"]},
        {"name": "account", "words": ["account", "login", "password", "profile"]},
    ]
}

# (name, task settings); every variant states all it sets, so a name means the same whatever the example ships
VARIANTS: list[tuple[str, dict]] = [
    ("both, first 2 per label", {"scoring": "both", "few_shot": {"per_label": 2}}),
    ("direct, first 2 per label", {"scoring": "direct", "few_shot": {"per_label": 2}}),
    ("channel, first 2 per label", {"scoring": "channel", "few_shot": {"per_label": 2}}),
    ("both, first 1 per label", {"scoring": "both", "few_shot": {"per_label": 1}}),
    ("direct, first 1 per label", {"scoring": "direct", "few_shot": {"per_label": 1}}),
    ("both, first 2 per label, no calibration", {"scoring": "both", "few_shot": {"per_label": 2}, "calibrate": False}),
    (
        "direct, first 2 per label, no calibration",
        {"scoring": "direct", "few_shot": {"per_label": 2}, "calibrate": False},
    ),
    ("both, first 3 per label", {"scoring": "both", "few_shot": {"per_label": 3}}),
    ("both, first 4 per label", {"scoring": "both", "few_shot": {"per_label": 4}}),
    ("direct, first 3 per label", {"scoring": "direct", "few_shot": {"per_label": 3}}),
    (
        "direct, first 2, content-free N/A, empty, [MASK] averaged",
        {"scoring": "direct", "few_shot": {"per_label": 2}, "content_free_inputs": ["N/A", "", "[MASK]"]},
    ),
    ("both, first 2 per label, four words per label", {"scoring": "both", "few_shot": {"per_label": 2}, **WORDS}),
    ("direct, 2 most similar per label", {"scoring": "direct", "few_shot": {"per_label": 2, "select": "similar"}}),
    ("direct, 3 most similar per label", {"scoring": "direct", "few_shot": {"per_label": 3, "select": "similar"}}),
    (
        "direct, 2 most similar per label, four words per label",
        {"scoring": "direct", "few_shot": {"per_label": 2, "select": "similar"}, **WORDS},
    ),
]
# Averages of several prompts' label distributions, each prompt with its own shots. Reported, never candidates: every
# member adds its whole labelling cost to each ticket. ``shot_set`` j takes each label's seeds from position
# j * per_label (the next ones in the seeds file), so the members of one average share no shot.
ENSEMBLES: list[tuple[str, list[dict]]] = [
    *(
        (
            f"mean of {k} prompts: both, 2 per label, disjoint shots",
            [{"scoring": "both", "few_shot": {"per_label": 2}, "shot_set": j} for j in range(k)],
        )
        for k in (2, 3, 4)
    ),
    (
        "mean of 4 prompts: both, the first 1, 2, 3 and 4 per label",
        [{"scoring": "both", "few_shot": {"per_label": k}} for k in (1, 2, 3, 4)],
    ),
]
QUICK = {"both, first 2 per label", "direct, first 2 per label", "channel, first 2 per label"}
COMMON = {"few_shot": {"select": "first"}, "content_free_inputs": ["N/A"], "calibrate": True}  # what a variant
# does not name
CHUNK = 16  # tickets per call, as distil generate labels
TIMING = "median seconds per ticket over chunks of 16"  # in the cache key: scores timed another way are measured again


def task_variant(spec, settings: dict):  # noqa: ANN001
    dumped = spec.task.model_dump()
    few_shot = {**dumped["few_shot"], **COMMON["few_shot"], **settings.get("few_shot", {})}
    top = {
        **{k: v for k, v in COMMON.items() if k != "few_shot"},
        **{k: v for k, v in settings.items() if k not in ("few_shot", "shot_set")},
    }
    return spec.task.__class__.model_validate({**dumped, **top, "few_shot": few_shot})


def ships(spec, settings: dict) -> bool:  # noqa: ANN001
    """Whether examples/triage's task section is this variant."""
    return task_variant(spec, settings).model_dump() == spec.task.model_dump()


def tokens_per_ticket(teacher, inputs: list[str]) -> float:  # noqa: ANN001
    """Mean tokens one ticket runs through the model after the kept prefixes: its direct query and, with channel
    scoring, its own tokens once per label. A cost that does not move with the machine's load."""
    direct = teacher.task.scoring != "channel"
    channel = len(teacher._channel_head_ids)
    total = sum(
        (len(teacher._query_ids(text)) if direct else 0) + channel * (len(teacher._channel_target_ids(text)) - 1)
        for text in inputs
    )
    return total / len(inputs)


def choose(rows: list[dict]) -> dict:
    """The rule: highest development accuracy; a tie goes to the variant that runs fewer tokens per ticket (its cost
    whatever the machine's load; the seconds were timed at different loads), then to the one the example ships."""
    return max(rows, key=lambda row: (round(row["dev"], 6), -round(row["tokens"], 6), row["ships"]))


def score_key(spec, task, scored: Path, shot_set: int = 0) -> str:  # noqa: ANN001
    """What a score depends on: the teacher, the task settings, the seeds (the shots, and which of them) and the
    scored file."""
    parts = [
        TIMING,
        spec.teacher().source,
        json.dumps(task.model_dump(mode="json"), sort_keys=True),
        hashlib.sha256((EXAMPLE / spec.data.seeds).read_bytes()).hexdigest(),
        hashlib.sha256(scored.read_bytes()).hexdigest(),
    ]
    if shot_set:  # absent for the first shots, so scores measured before shot sets existed stay valid
        parts.append(f"shot set {shot_set}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def shot_pool(seeds: list[tuple[str, str]], names: list[str], start: int) -> list[tuple[str, str]]:
    """The labelled seeds with each label's first ``start`` moved to its end: the first shots become the next ones."""
    by_label = {name: [s for s in seeds if s[1] == name] for name in names}
    return [s for name in names for s in by_label[name][start:] + by_label[name][:start]]


def label_scores(probs: np.ndarray, truth: np.ndarray, n_labels: int) -> dict:
    """Accuracy, recall per label and mean top probability of label distributions [n, L] against ``truth``."""
    predicted = probs.argmax(axis=1)
    return {
        "accuracy": float((predicted == truth).mean()),
        "recall": [float((predicted[truth == i] == i).mean()) for i in range(n_labels)],
        "top": float(probs.max(axis=1).mean()),
    }


def measured_cells(row: dict) -> list[str]:
    """The columns both tables share: dev accuracy, recall per label, mean top probability, cost and load."""
    return [
        f"{row['dev']:.3f}",
        *(f"{r:.2f}" for r in row["recall"]),
        f"{row['top']:.2f}",
        f"{row['tokens']:.0f}",
        f"{row['seconds']:.2f}",
        f"{row['load']:.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Three variants only, to estimate the full run's time.")
    parser.add_argument(
        "--threads", type=int, default=0, help="A fixed torch thread count (default: teachers[].threads, auto)."
    )
    parser.add_argument(
        "--gold",
        choices=("all", "picked"),
        default="all",
        help="Score the gold set (report only) for every variant, or only for the picked and the shipped one.",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "distil-teacher-prompt.json",
        help="Scores already measured, reused by a rerun.",
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    parser.add_argument(
        "--source",
        help="Score another local teacher (a teachers[].source such as gguf:FOLDER#FILE.gguf) instead of the "
        "example's; prints only, the section stays the example's teacher's.",
    )
    args = parser.parse_args()

    import torch

    from distil.data.sources import read_inputs
    from distil.files import write_json_atomic
    from distil.spec.io import spec_from_text
    from distil.teachers.base import choose_shots
    from distil.teachers.hf_local import HFLocalTeacher
    from distil.teachers.loading import load_causal_lm

    spec = spec_from_text((EXAMPLE / "distil.yaml").read_text(), str(EXAMPLE / "distil.yaml"))
    if args.source:
        spec.teachers[0] = spec.teacher().model_copy(update={"source": args.source})
        args.no_write = True
    teacher_spec = spec.teacher()
    if args.threads:
        torch.set_num_threads(args.threads)
        teacher_spec = teacher_spec.model_copy(update={"threads": args.threads})
    names = spec.task.label_names
    seeds = [(item.input, item.label) for item in read_inputs(EXAMPLE / spec.data.seeds) if item.label]
    dev = read_inputs(DEV)
    gold = read_inputs(EXAMPLE / spec.data.gold)
    dev_truth = np.array([names.index(item.label) for item in dev])
    gold_truth = np.array([names.index(item.label) for item in gold])
    cache: dict[str, dict] = json.loads(args.cache.read_text()) if args.cache.is_file() else {}
    loaded: list = []

    def teacher_for(task, shot_set: int = 0):  # noqa: ANN001, ANN202 - the model is loaded on the first score not cached
        if not loaded:
            loaded.extend(load_causal_lm(spec.teacher().source))
        model, tokenizer, fingerprint = loaded
        shots = choose_shots(task, shot_pool(seeds, names, shot_set * task.few_shot.per_label))
        return HFLocalTeacher(teacher_spec, task, shots, model=model, tokenizer=tokenizer, fingerprint=fingerprint)

    def scored(task, path: Path, truth: np.ndarray, shot_set: int = 0, probs_needed: bool = False) -> dict:  # noqa: ANN001
        key = score_key(spec, task, path, shot_set)
        if key not in cache or (probs_needed and "probs" not in cache[key]):
            inputs = [item.input for item in read_inputs(path)]
            teacher = teacher_for(task, shot_set)
            parts, per_ticket = [], []
            for start in range(0, len(inputs), CHUNK):
                chunk = inputs[start : start + CHUNK]
                started = time.perf_counter()
                parts.append(teacher.label_distribution(chunk))
                per_ticket.append((time.perf_counter() - started) / len(chunk))
            probs = np.concatenate(parts)
            cache[key] = {
                **label_scores(probs, truth, len(names)),
                "seconds": statistics.median(per_ticket),
                "first_chunk": per_ticket[0],
                "load": os.getloadavg()[0],
                "probs": probs.tolist(),  # for the averages of several prompts
            }
            write_json_atomic(args.cache, cache)
        return cache[key]

    rows: list[dict] = []
    for name, settings in VARIANTS:  # the development file first: the choice is made before any gold ticket is scored
        if args.quick and name not in QUICK:
            continue
        task = task_variant(spec, settings)
        dev_score = scored(task, DEV, dev_truth)
        rows.append(
            {
                "name": name,
                "settings": settings,
                "task": task,
                "ships": ships(spec, settings),
                "dev": dev_score["accuracy"],
                "recall": dev_score["recall"],
                "top": dev_score["top"],
                "seconds": dev_score["seconds"],
                "load": dev_score["load"],
                "gold": None,
            }
        )
        print({k: v for k, v in rows[-1].items() if k not in ("settings", "task")}, flush=True)
    dev_inputs = [item.input for item in dev]
    for row in rows:
        row["tokens"] = tokens_per_ticket(teacher_for(row["task"]), dev_inputs)
    picked = choose(rows)
    averages = []  # several prompts averaged: the development file only, reported beside the choice, never in it
    members_dev: list[float] = []  # each averaged prompt alone
    for name, members in [] if args.quick else ENSEMBLES:
        tasks = [(task_variant(spec, settings), settings.get("shot_set", 0)) for settings in members]
        parts = [scored(task, DEV, dev_truth, shot_set, probs_needed=True) for task, shot_set in tasks]
        members_dev += [part["accuracy"] for part in parts]
        averaged = label_scores(np.mean([np.array(part["probs"]) for part in parts], axis=0), dev_truth, len(names))
        averages.append(
            {
                "name": name,
                "dev": averaged["accuracy"],
                "recall": averaged["recall"],
                "top": averaged["top"],
                "tokens": sum(tokens_per_ticket(teacher_for(t, j), dev_inputs) for t, j in tasks),
                "seconds": sum(part["seconds"] for part in parts),
                "load": max(part["load"] for part in parts),
            }
        )
        print({k: v for k, v in averages[-1].items()}, flush=True)
    for row in rows:  # report only
        if args.gold == "all" or row is picked or row["ships"]:
            row["gold"] = scored(row["task"], EXAMPLE / spec.data.gold, gold_truth)["accuracy"]
            print(row["name"], "gold (report only):", row["gold"], flush=True)

    shipped = next((row["name"] for row in rows if row["ships"]), "none of these")
    table = [
        [
            row["name"] + (" (ships)" if row["ships"] else ""),
            *measured_cells(row),
            "not scored" if row["gold"] is None else f"{row['gold']:.3f}",
        ]
        for row in rows
    ]
    body = (
        f"Teacher {spec.teacher().source}, shots from the seeds (`few_shot.select: first`), "
        "calibration on unless named; "
        "content-free input N/A unless named. Chosen on the development file `examples/triage/dev.jsonl`: "
        f"{len(dev)} hand-labelled tickets ({', '.join(f'{(dev_truth == i).sum()} {n}' for i, n in enumerate(names))}) "
        "that are neither seeds nor gold and that the cadence never reads. "
        "Recall and mean top probability are on the development file; "
        "seconds per ticket: the median over the development file's chunks of 16 tickets, labelled as "
        "`distil generate` labels (the prompt's prefixes and the calibration run once, in the first chunk), on "
        + (f"{args.threads} torch threads" if args.threads else "teachers[].threads: auto")
        + ", with the 1-minute load average when the variant finished (CPU, shared machine: indicative; "
        "the tokens each ticket runs through the model after the kept prefixes are the cost that does not move "
        "with the load). "
        f"Gold accuracy ({len(gold)} tickets) is report only, scored after the choice was made"
        + (" and only for the picked and the shipped variant" if args.gold == "picked" else "")
        + ".\n\n"
        + markdown_table(
            [
                "prompt",
                "dev accuracy",
                *(f"dev recall {n}" for n in names),
                "dev mean top probability",
                "tokens run / ticket",
                "seconds / ticket",
                "load",
                "gold accuracy (report only)",
            ],
            table,
        )
        + "\n\nRule: the highest development accuracy; a tie goes to the variant that runs fewer tokens per ticket "
        "(the seconds were timed at different loads), then to the one the example ships. "
        f"It picks **{picked['name']}** "
        f"(dev {picked['dev']:.3f}, {picked['tokens']:.0f} tokens / ticket); examples/triage ships {shipped}.\n"
    )
    if averages:
        body += (
            '\nAveraging several prompts\' label distributions (each prompt with its own shots; "disjoint": the '
            "second prompt takes each label's next seeds, and so on) on the same development file. Not candidates, "
            "and not an option distil offers: every prompt adds its whole labelling cost to each ticket (tokens and "
            "seconds below are the members' sums), which the quickstart's six minutes on two cores leave no room "
            f"for. Reported because, alone, the prompts averaged here score {min(members_dev):.3f} to "
            f"{max(members_dev):.3f} on the development file depending on which seeds they show, and an average is "
            "steadier; gold not scored.\n\n"
            + markdown_table(
                [
                    "prompts averaged",
                    "dev accuracy",
                    *(f"dev recall {n}" for n in names),
                    "dev mean top probability",
                    "tokens run / ticket",
                    "seconds / ticket",
                    "load",
                ],
                [[row["name"], *measured_cells(row)] for row in averages],
            )
            + "\n"
        )
    print(body)
    print("picked:", picked["name"], picked["settings"])
    if not args.no_write:
        write_section(
            "teacher_prompt",
            "Triage teacher: prompt variants chosen on the development file",
            body,
            command="python benchmarks/teacher_prompt.py"
            + (" --quick" if args.quick else "")
            + (" --gold picked" if args.gold == "picked" else "")
            + (f" --threads {args.threads}" if args.threads else ""),
        )


if __name__ == "__main__":
    main()
