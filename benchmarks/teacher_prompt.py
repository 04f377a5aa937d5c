"""The triage teacher's prompt: gold-set accuracy and labelling speed of each prompt variant.

The embedded teacher (SmolLM2-135M-Instruct) is loaded once; each variant is a change to the
example's ``task`` section (how shots are chosen, how many, calibration inputs), scored on the
168-ticket hand-labelled gold set exactly as ``distil generate`` would label it. Shots come from the
seeds only, never from the gold set.

    python benchmarks/teacher_prompt.py            # every variant, writes its docs/benchmarks.md section
    python benchmarks/teacher_prompt.py --quick    # the shipped prompt and its nearest rivals
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "triage"

# (name, changes to the example's task section); the first row is what examples/triage ships
VARIANTS: list[tuple[str, dict]] = [
    ("shipped", {}),
    ("direct only", {"scoring": "direct"}),
    ("channel only", {"scoring": "channel"}),
    ("both, first 3 per label", {"few_shot": {"per_label": 3}}),
    ("both, first 4 per label", {"few_shot": {"per_label": 4}}),
    ("direct, first 3 per label", {"scoring": "direct", "few_shot": {"per_label": 3}}),
    ("direct, content-free N/A, empty, [MASK] averaged", {"scoring": "direct", "content_free_inputs": ["N/A", "", "[MASK]"]}),
    ("direct, similar 2 per label", {"scoring": "direct", "few_shot": {"select": "similar", "per_label": 2}}),
]
QUICK = {"shipped", "direct only", "channel only"}
HELD_BACK = 4  # seeds after the first 4 of each label are never shots of a `first` variant: the validation set


def task_variant(spec, changes: dict):  # noqa: ANN001
    dumped = spec.task.model_dump()
    few_shot = {**dumped["few_shot"], **changes.get("few_shot", {})}
    return spec.task.__class__.model_validate({**dumped, **{k: v for k, v in changes.items() if k != "few_shot"}, "few_shot": few_shot})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Only the shipped prompt and its nearest rivals.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()

    import torch

    from distil.data.sources import read_inputs
    from distil.spec.io import spec_from_text
    from distil.teachers.base import choose_shots
    from distil.teachers.hf_local import HFLocalTeacher
    from distil.teachers.loading import load_causal_lm

    torch.set_num_threads(args.threads)
    spec = spec_from_text((EXAMPLE / "distil.yaml").read_text(), str(EXAMPLE / "distil.yaml"))
    labelled = [(item.input, item.label) for item in read_inputs(EXAMPLE / spec.data.seeds) if item.label]
    gold = [item for item in read_inputs(EXAMPLE / spec.data.gold)]
    names = spec.task.label_names
    truth = np.array([names.index(item.label) for item in gold])
    seen: dict[str, int] = {}
    validation = []
    for text, label in labelled:
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > HELD_BACK and label in names:
            validation.append((text, names.index(label)))
    model, tokenizer, fingerprint = load_causal_lm(spec.teacher().source)

    rows = []
    for name, changes in VARIANTS:
        if args.quick and name not in QUICK:
            continue
        task = task_variant(spec, changes)
        teacher = HFLocalTeacher(spec.teacher(), task, choose_shots(task, labelled), model=model, tokenizer=tokenizer, fingerprint=fingerprint)
        started = time.perf_counter()
        probs = teacher.label_distribution([item.input for item in gold])
        seconds = time.perf_counter() - started
        predicted = probs.argmax(axis=1)
        per_label = [float((predicted[truth == i] == i).mean()) for i in range(len(names))]
        on_seeds = teacher.label_distribution([text for text, _ in validation]).argmax(axis=1)
        held_out = float((on_seeds == np.array([label for _, label in validation])).mean())
        rows.append([name, f"{held_out:.3f}", f"{(predicted == truth).mean():.3f}", *(f"{a:.2f}" for a in per_label), f"{probs.max(axis=1).mean():.2f}", f"{len(gold) / seconds:.1f}"])
        print(rows[-1], flush=True)

    shipped = spec.task.few_shot
    body = (
        f"Teacher {spec.teacher().source}; the shipped prompt: `scoring: {spec.task.scoring}`, `few_shot.select: {shipped.select}`, "
        f"{shipped.per_label} per label, "
        f"content-free inputs {spec.task.content_free_inputs}, calibration {'on' if spec.task.calibrate else 'off'}. "
        f"Gold set: {len(gold)} hand-labelled tickets. Labelling rate: gold tickets per second at batch 16, calibration included "
        f"(CPU, shared machine: indicative). Seed accuracy: the {len(validation)} labelled seeds after the first {HELD_BACK} of "
        "each label, never a shot of a `first` variant (the set to choose a prompt on; gold is for reporting).\n\n"
        + markdown_table(["prompt", "seed accuracy", "gold accuracy", *(f"recall {n}" for n in names), "mean top probability", "tickets / s"], rows)
        + "\n"
    )
    print(body)
    if not args.no_write:
        write_section("teacher_prompt", "Triage teacher: prompt variants on the gold set", body,
                      command="python benchmarks/teacher_prompt.py" + (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads != 2 else ""))


if __name__ == "__main__":
    main()
