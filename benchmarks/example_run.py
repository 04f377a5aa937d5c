"""Run an example end to end with `distil run` (or read a project already run) and record what it measured.

    python benchmarks/example_run.py --example summaries           # init + gate lock + distil run in a temp folder
    python benchmarks/example_run.py --project /path/to/project    # report a project already run

The elapsed time is taken from the ledger: from the gate lock to the last evaluation event.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DISTIL = [sys.executable, "-m", "distil"]


def run_example(name: str) -> Path:
    project = Path(tempfile.mkdtemp(prefix=f"distil-{name}-")) / name
    subprocess.run([*DISTIL, "init", str(project), "--example", name], check=True, stdout=subprocess.DEVNULL)
    spec = str(project / "distil.yaml")
    from distil.spec.io import load_project

    sponsor_name = load_project(spec).spec.roles.sponsor
    subprocess.run(
        [*DISTIL, "gate", "lock", "--as", sponsor_name, "--spec", spec], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run([*DISTIL, "run", "--spec", spec], check=True, stdout=subprocess.DEVNULL)
    return project


def summarise(project: Path) -> str:
    from distil.spec.io import load_project

    p = load_project(project / "distil.yaml")
    events = p.ledger.events()
    start = next(e.ts for e in events if e.kind == "gate.locked")
    end = [e.ts for e in events if e.kind == "evaluation"][-1]
    minutes = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() / 60
    run_dir = sorted(p.runs_dir.glob("*/evaluation.json"))[-1].parent
    ev = json.loads((run_dir / "evaluation.json").read_text())
    kind = p.spec.task.kind
    cols = (
        ["accuracy", "agreement", "kl", "p95_ms", "params"]
        if kind == "classify"
        else ["agreement", "rouge_l", "p50_ms", "p95_ms", "params"]
    )
    rows = []
    for name in ("teacher", "student", "baseline"):
        block, gold = ev[name], ev[name].get("gold") or {}
        row = [name] + [
            ("-" if block.get(c) is None else (f"{block[c]:,}" if isinstance(block[c], int) else f"{block[c]:.3f}"))
            for c in cols
        ]
        gold_metric = gold.get("accuracy") if kind == "classify" else gold.get("rouge_l")
        row.append("-" if gold_metric is None else f"{gold_metric:.3f}")
        rows.append(row)
    metric = (
        "agreement = exact match with the teacher's text, rouge_l = mean ROUGE-L F1 against it"
        if kind == "generate"
        else "agreement = top-1 agreement with the teacher"
    )
    checks = [
        [
            c["name"],
            "-" if c["value"] is None else f"{c['value']:.3f}",
            c["threshold"],
            "pass" if c["passed"] else "FAIL",
        ]
        for c in ev["gate"]["checks"]
    ]
    return (
        f"Project `{p.spec.name}` ({kind}), student {p.spec.student.init or 'custom'}; cadence from gate lock to "
        f"evaluation: **{minutes:.1f} minutes** (one run). Held-out split of the curated data; {metric}; the last "
        "column scores the gold set (accuracy against the hand labels for classify; for generate, ROUGE-L against "
        "the teacher's text on the gold inputs).\n\n"
        + markdown_table(["model", *cols, "gold"], rows)
        + "\n\nGate verdict:\n\n"
        + markdown_table(["threshold", "value", "limit", "verdict"], checks)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", help="Example under examples/ to run end to end.")
    parser.add_argument("--project", type=Path, help="A project already run with `distil run`.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not args.example and not args.project:
        parser.error("give --example NAME or --project DIR")
    project = args.project or run_example(args.example)
    body = summarise(project)
    print(body)
    if not args.no_write:
        from distil.spec.io import load_project

        name = load_project(project / "distil.yaml").spec.name
        write_section(f"example_{name}", f"Example `{name}` end to end with `distil run`", body)


if __name__ == "__main__":
    main()
