"""Time `make quickstart` from a fresh clone and report what the cadence measured on the triage example.

A fresh clone gets its own virtual environment (packages come from the machine's pip cache) and an
empty distil cache, so the teacher's GGUF is dequantized again; the time covers install + cadence.
With --installed it times only `distil quickstart` in a new folder, with the environment and the
teacher cache already in place. Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run ``cmd``, its output kept in ``log`` (the step table and verdict the README quotes)."""
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(cmd, cwd=cwd, env={**env, "COLUMNS": "120"}, check=True, stdout=out)
    print(f"output: {log}")
    return time.perf_counter() - start


def interval_text(interval: list | None) -> str:
    if not interval or any(v is None for v in interval):
        return ""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def evaluation_of(project: Path) -> dict:
    runs = sorted((project / ".distil" / "runs").glob("*/evaluation.json"))
    return json.loads(runs[-1].read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--installed", action="store_true", help="Time only `distil quickstart` with everything installed."
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="Runs to time (the median is reported; its run's evaluation is shown)."
    )
    parser.add_argument("--no-write", action="store_true", help="Print, do not write docs/benchmarks.md.")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    runs = sorted((one_run(args.installed) for _ in range(args.repeats)), key=lambda run: run[0])
    seconds, project, what, _ = runs[(len(runs) - 1) // 2]
    times = ", ".join(f"{s / 60:.1f} (load {load:.2f} at its end)" for s, _, _, load in runs)
    report(args, seconds, project, what, times, len(runs))


def one_run(installed: bool) -> tuple[float, Path, str, float]:
    """One timed quickstart in a new folder: (seconds, its project folder, what was timed, 1-minute load at its end)."""
    work = Path(tempfile.mkdtemp(prefix="distil-quickstart-"))
    env = {**os.environ}
    if installed:
        project = work / "distil-quickstart"
        seconds = timed(
            [str(ROOT / ".venv" / "bin" / "distil"), "quickstart", str(project)], work, env, work / "quickstart.log"
        )
        what = "`distil quickstart` (installed, teacher cache warm)"
    else:
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env["DISTIL_CACHE"] = str(work / "cache")  # the teacher is dequantized again, as on a new machine
        seconds = timed(["make", "quickstart"], clone, env, work / "quickstart.log")
        project = clone / "distil-quickstart"
        what = "`make quickstart` from a fresh clone (new .venv from the pip cache, empty teacher cache)"
    load = os.getloadavg()[0]
    print(f"{what}: {seconds / 60:.1f} minutes (load {load:.2f}), project {project}", flush=True)
    return seconds, project, what, load


def report(args, seconds: float, project: Path, what: str, times: str, count: int) -> None:
    from distil.evaluate.figures import disagreement_text

    ev = evaluation_of(project)
    rows = []
    for name in ("teacher", "student", "baseline"):
        b, gold = ev[name], ev[name].get("gold") or {}
        rows.append(
            [
                name,
                f"{gold.get('accuracy', float('nan')):.3f}",
                f"{gold.get('agreement', float('nan')):.3f}",
                f"{gold.get('kl', float('nan')):.3f}",
                "reference" if name == "teacher" else disagreement_text(gold.get("disagreements")),
                f"{b['agreement']:.3f}",
                f"{b['kl']:.3f}",
                f"{b['p95_ms']:.1f}",
                f"{b['params']:,}",
            ]
        )
    checks = [
        [
            c["name"],
            c["value"] if c["value"] is None else f"{c['value']:.3f}",
            interval_text(c.get("interval")),
            c["threshold"],
            "" if c.get("p_value") is None else f"{c['p_value']:.3g}",
            "" if c.get("n") is None else c["n"],
            c.get("status") or ("pass" if c["passed"] else "FAIL"),
            "" if c.get("items_needed") is None else c["items_needed"],
        ]
        for c in ev["gate"]["checks"]
    ]
    body = (
        f"{what}: **{seconds / 60:.1f} minutes** "
        + ("(one run)" if count == 1 else f"(median of {count} runs, one after another: {times} minutes)")
        + ".\n\nThe triage example's evaluation"
        + ("" if count == 1 else " (the median run)")
        + ": the held-out split "
        f"({ev['student'].get('n', '?')} tickets) for agreement / KL, the 168-ticket gold set for accuracy, for "
        f"agreement / KL with the teacher on more tickets, and for latency ({ev['student']['latency']['requests']} "
        "of its tickets timed at batch 1):\n\n"
        + markdown_table(
            [
                "model",
                "gold accuracy",
                "gold agreement",
                "gold KL",
                "gold: where it differs from the teacher, who is right",
                "held-out agreement",
                "held-out KL",
                "p95 ms (batch 1)",
                "params",
            ],
            rows,
        )
        + "\n\nGate verdict:\n\n"
        + markdown_table(
            ["threshold", "value", "95% interval", "limit", "p-value", "n", "status", "items that would decide it"],
            checks,
        )
        + "\n"
    )
    print(body)
    if not args.no_write:
        write_section(
            "quickstart_installed" if args.installed else "quickstart_fresh",
            "Quickstart on the embedded default" + (" (installed)" if args.installed else " (fresh clone)"),
            body,
        )


if __name__ == "__main__":
    main()
