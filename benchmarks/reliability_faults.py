"""Generate 500 items through the fault-injecting teacher server and write the measured table into
docs/reliability.md (between the `faults:begin` / `faults:end` markers).

Usage: .venv/bin/python benchmarks/reliability_faults.py [--items 500] [--seeds 7,8,9]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
DOC = ROOT / "docs" / "reliability.md"


def one_run(items: int, seed: int) -> dict:
    from tests.reliability.helpers import dataset_counts, record_labels, tickets
    from tests.reliability.test_teacher_faults import RATES, run_faulty_generate

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DISTIL_CACHE"] = str(Path(tmp) / "cache")
        project, result, stats, teacher = run_faulty_generate(Path(tmp) / "p", n=items, seed=seed)
        expected = dict(tickets(items))
        labels = {r.input: r.label for r in result.records}
        prompts = [teacher.classify_prompt(t) for t in expected]
        return {
            "seed": seed,
            "rates": RATES,
            "faults": Counter(stats.faults),
            "requests": stats.total_requests,
            "records": len(record_labels(project.root)),
            "ledger": dataset_counts(project.root)[-1]["seed"],
            "answered_once": sum(stats.answered[p] == 1 for p in prompts),
            "wrong": sum(labels.get(t) != lab for t, lab in expected.items()),
            "lost": sum(t not in labels for t in expected),
            "verify": project.ledger.verify().ok,
        }


def table(runs: list[dict], items: int) -> str:
    rates = runs[0]["rates"]
    head = "| fault | rate per request | " + " | ".join(f"injected (seed {r['seed']})" for r in runs) + " |"
    lines = [head, "|---|---|" + "---|" * len(runs)]
    for kind, rate in rates.items():
        lines.append(f"| {kind} | {rate:.0%} | " + " | ".join(str(r["faults"][kind]) for r in runs) + " |")
    lines.append("| **all faults** | | " + " | ".join(str(sum(r["faults"].values())) for r in runs) + " |")
    lines.append("")
    lines.append("| outcome | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |")
    lines.append("|---|" + "---|" * len(runs))
    for key, title in (
        ("requests", "HTTP requests sent"),
        ("answered_once", f"items answered exactly once (of {items})"),
        ("records", "records in the raw shard"),
        ("ledger", "count in the ledger's dataset row"),
        ("lost", "items lost"),
        ("wrong", "items with a wrong label"),
        ("verify", "`ledger verify` holds"),
    ):
        lines.append(f"| {title} | " + " | ".join(str(r[key]) for r in runs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seeds", default="7,8,9")
    args = parser.parse_args()
    runs = [one_run(args.items, int(s)) for s in args.seeds.split(",")]
    body = table(runs, args.items)
    text = DOC.read_text()
    begin, end = "<!-- faults:begin -->", "<!-- faults:end -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    command = f"`.venv/bin/python benchmarks/reliability_faults.py --items {args.items} --seeds {args.seeds}`"
    DOC.write_text(text[:start] + f"\n\nMeasured by {command}:\n\n{body}\n\n" + text[stop:])
    print(body)


if __name__ == "__main__":
    main()
