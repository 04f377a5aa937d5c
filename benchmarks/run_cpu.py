"""Run every CPU benchmark in turn, each in its own process; each writes its own section of docs/benchmarks.md.

The paper benchmarks come first, then the others in name order; any later benchmarks/*.py (not
starting with "_") is picked up too, with its default arguments. GPU-only measurements are left out.

    python benchmarks/run_cpu.py                 # everything (`make bench`)
    python benchmarks/run_cpu.py --only munge.py hinton_digits.py
    python benchmarks/run_cpu.py --list
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# (script, arguments): the known CPU benchmarks and the arguments that keep them on the CPU
SCRIPTS: list[tuple[str, list[str]]] = [
    ("hinton_digits.py", ["--size", "full"]),
    ("munge.py", ["--size", "full"]),
    ("divergence_study.py", ["--size", "cpu"]),
    ("train_throughput.py", ["--device", "cpu"]),
]


def plan() -> list[tuple[str, list[str]]]:
    known = {name for name, _ in SCRIPTS}
    others = sorted(
        p.name
        for p in BENCH.glob("*.py")
        if not p.name.startswith("_") and p.name != Path(__file__).name and p.name not in known
    )
    return [(n, a) for n, a in SCRIPTS if (BENCH / n).exists()] + [(n, []) for n in others]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="Run only these scripts.")
    parser.add_argument("--list", action="store_true", help="Print the plan and stop.")
    args = parser.parse_args(argv)
    todo = [(n, a) for n, a in plan() if args.only is None or n in args.only]
    if args.list:
        for name, extra in todo:
            print(" ".join([name, *extra]))
        return 0
    failed = []
    for name, extra in todo:
        started = time.time()
        print(f"== {name} {' '.join(extra)}", flush=True)
        code = subprocess.call([sys.executable, str(BENCH / name), *extra], cwd=BENCH.parent)
        print(f"== {name}: exit {code}, {time.time() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
