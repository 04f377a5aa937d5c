"""The triage student exported four ways: size on disk and agreement with the teacher of each.

Exports the quickstart's student (`examples/triage`: a 6-layer cut of the SmolLM2-135M-Instruct teacher) with
`distil export`'s library as safetensors, ONNX int8, GGUF q8_0 and GGUF q4_0. Each quantized file is evaluated on
its own by the export (``distil.export_eval``): its label distributions against the teacher's on the locked test
split and on the gold set (the teacher's answers the round's evaluation recorded), and against the hand labels of
the gold set, each a count k of n with its Wilson 95% interval; each is recorded in the project's ledger as an
evaluation variant beside the round (``quantized``, ``gguf-q8_0``, ``gguf-q4_0``). The safetensors export is the
student's own files, so its figures are the round's evaluation (`distil evaluate`); the float student rescored by
the export evaluations must give the same counts, which the section reports. Sizes are the model file's bytes as
stored; the teacher's is its GGUF file.

    python benchmarks/export_sizes.py                                   # builds the quickstart project first
    python benchmarks/export_sizes.py --project DIR [--run RUN] --threads 1

``--project`` takes a built triage project (its folder or distil.yaml); the exports and their evaluations are
written into it. Without it, `distil quickstart` builds one in a temporary folder.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _report import markdown_table, write_section  # noqa: E402

MIB = 1024 * 1024
VARIANTS = (("onnx", "int8"), ("gguf", "q8_0"), ("gguf", "q4_0"))


def built_project(path: Path | None) -> Path:
    """The spec of ``path`` (a folder or its distil.yaml); without one, a quickstart project built for this run."""
    if path is not None:
        return path / "distil.yaml" if path.is_dir() else path
    folder = Path(tempfile.mkdtemp(prefix="export-sizes-")) / "distil-quickstart"
    subprocess.run([sys.executable, "-m", "distil", "quickstart", str(folder)], check=True)
    return folder / "distil.yaml"


def rate(k: float, n: int) -> dict[str, Any]:
    from distil.evaluate.evidence import rate_measure

    measure = rate_measure(int(round(k)), n)
    return {"k": measure["k"], "n": n, "value": measure["value"], "ci": measure["interval"]}


def round_scores(block: dict[str, Any]) -> dict[str, Any]:
    """The round's evaluation of one model (``student`` or ``teacher``) as k of n with Wilson intervals."""
    gold = block.get("gold") or {}
    out = {"test": rate(sum(block["per_item"]["agreement"]), block["n"])}
    if gold:
        out["gold"] = rate(sum(gold["per_item"]["agreement"]), gold["n"])
        out["accuracy"] = rate(sum(gold["per_item"]["correct"]), len(gold["per_item"]["correct"]))
    return out


def variant_scores(block: dict[str, Any]) -> dict[str, Any]:
    """An export evaluation's block (``distilled`` or ``quantized``) in the same form."""
    gold = block.get("gold") or {}
    out = {"test": rate(block["agreement_k"], block["n"])}
    if gold:
        out["gold"] = rate(gold["agreement_k"], gold["n"])
        if gold.get("accuracy_k") is not None:
            out["accuracy"] = rate(gold["accuracy_k"], gold["n_labelled"])
    return out


def shown(r: dict[str, Any] | None) -> str:
    if not r:
        return "–"
    lo, hi = r["ci"]
    return f"{r['value']:.3f} ({r['k']}/{r['n']}) [{lo:.3f}, {hi:.3f}]"


def measure(spec_path: Path, run_id: str | None, threads: int) -> dict[str, Any]:
    """Export every format, keeping each evaluation, the round's evaluation and the seconds each export took."""
    from distil.export import export_run
    from distil.serve.runs import served_run
    from distil.spec.io import load_project

    project = load_project(spec_path)
    run = served_run(project, run_id)
    evaluation = json.loads(run.evaluation.read_text())
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    safetensors = export_run(project, run.run_id, "safetensors")
    seconds["safetensors"] = time.perf_counter() - started
    exported = safetensors.folder / "model.safetensors"
    variants = {}
    for fmt, quantize in VARIANTS:
        started = time.perf_counter()
        result = export_run(project, run.run_id, fmt, quantize, threads=threads)
        seconds[f"{fmt} {quantize}"] = time.perf_counter() - started
        variants[f"{fmt} {quantize}"] = result.evaluation
        print(f"{fmt} {quantize}: {seconds[f'{fmt} {quantize}']:.0f} s", flush=True)
    return {
        "project": project,
        "run_id": run.run_id,
        "round": evaluation,
        "safetensors": {
            "file": exported,
            "size_bytes": exported.stat().st_size,
            "same_as_student": filecmp.cmp(exported, run.student / "model.safetensors", shallow=False),
        },
        "variants": variants,
        "seconds": seconds,
    }


def section_body(m: dict[str, Any], load: tuple[float, float], threads: int) -> str:
    spec = m["project"].spec
    ev = m["round"]
    teacher_bytes = ev["teacher"]["size_bytes"]
    student = round_scores(ev["student"])
    teacher = round_scores(ev["teacher"])

    def row(name: str, file: str, size: int, scores: dict[str, Any], p50: float | None) -> list[object]:
        return [
            name,
            f"`{file}`",
            f"{size:,}",
            f"{size / MIB:.1f}",
            f"{size / teacher_bytes:.2f}×",
            shown(scores.get("test")),
            shown(scores.get("gold")),
            shown(scores.get("accuracy")),
            "–" if p50 is None else f"{p50:.1f}",
        ]

    onnx = m["variants"]["onnx int8"]
    rows = [
        row(
            "teacher (GGUF Q4_1, few-shot)",
            spec.teachers[0].source.split("#")[-1],
            teacher_bytes,
            {"accuracy": teacher.get("accuracy")},
            ev["teacher"]["p50_ms"],
        ),
        row(
            "student, safetensors (float32)",
            "model.safetensors",
            m["safetensors"]["size_bytes"],
            student,
            ev["student"]["p50_ms"],
        ),
        row(
            "student, ONNX float32 (the int8 evaluation's reference)",
            "model.onnx",
            onnx["distilled"]["size_bytes"],
            variant_scores(onnx["distilled"]),
            onnx["distilled"].get("p50_ms"),
        ),
        row(
            "student, ONNX int8",
            "model.int8.onnx",
            onnx["quantized"]["size_bytes"],
            variant_scores(onnx["quantized"]),
            onnx["quantized"].get("p50_ms"),
        ),
    ]
    for quantize in ("q8_0", "q4_0"):
        block = m["variants"][f"gguf {quantize}"]["quantized"]
        rows.append(
            row(f"student, GGUF {quantize}", f"model.{quantize}.gguf", block["size_bytes"], variant_scores(block), None)
        )

    rescored = [variant_scores(m["variants"][f"gguf {q}"]["distilled"]) for q in ("q8_0", "q4_0")]
    same = all(r.get(s, {}).get("k") == student.get(s, {}).get("k") for r in rescored for s in ("test", "gold"))
    gold_n = student["gold"]["n"] if "gold" in student else 0
    with_float = {
        name: (
            m["variants"][name]["quantized"]["agreement_with_float"],
            (m["variants"][name]["quantized"].get("gold") or {}).get("agreement_with_float"),
        )
        for name in m["variants"]
    }
    threads_eval = ev["student"]["latency"]["threads"]
    return (
        f"Project `{spec.name}` (`examples/triage`, the quickstart), run `{m['run_id']}`: the student "
        f"(`{spec.student.init}` of the teacher, {ev['student']['params']:,} parameters) exported with `distil export` "
        f"(`export_run`, onnxruntime and torch at {threads} thread(s)). Agreement is the student's top label against "
        f"the teacher's on the {ev['student']['n']} locked test tickets and on the {gold_n} gold tickets (the "
        "teacher's answers the round's evaluation recorded); accuracy is against the gold tickets' hand labels. "
        "Each cell: the rate (k/n) [Wilson 95% interval]. Size: the model file's bytes on disk "
        "(the tokenizer, about 3.4 MB, travels beside the safetensors and ONNX files and inside the GGUF files); "
        "× teacher: against the teacher's GGUF file.\n\n"
        + markdown_table(
            [
                "model",
                "file",
                "bytes",
                "MiB",
                "× teacher",
                "test agreement",
                "gold agreement",
                "gold accuracy (hand labels)",
                "p50 ms (batch 1)",
            ],
            rows,
        )
        + "\n\nThe safetensors row is the round's own evaluation (`distil evaluate`); the exported file is "
        + ("byte-identical to" if m["safetensors"]["same_as_student"] else "**not** identical to")
        + " the trained student's. The float student rescored inside each GGUF evaluation gives "
        + ("the same counts on both sets." if same else "**different counts** from the round's; see the evaluations.")
        + " Agreement of each quantized file with the float student (test, gold): "
        + "; ".join(f"{name} {t:.3f}, {'–' if g is None else f'{g:.3f}'}" for name, (t, g) in with_float.items())
        + ". Every quantized variant is recorded in the project's ledger beside the round (`quantized`, "
        "`gguf-q8_0`, `gguf-q4_0`).\n\n"
        "How each file was read: ONNX with onnxruntime on the CPU; GGUF through transformers' GGUF loader, which "
        "dequantizes the weights to float32, so the agreement measured is the effect of rounding the weights to "
        "q8_0 / q4_0 blocks (llama.cpp also quantizes activations to 8 bits in those matrix products, which is not "
        "measured here). Latency: the safetensors and teacher rows are `distil evaluate`'s p50 at batch 1 "
        f"({ev['student']['latency']['requests']} gold tickets, {threads_eval} threads); the ONNX rows are the "
        "export's own (mean per ticket over 20 test tickets one at a time, median of 3 passes); GGUF latency is not "
        "given, since through transformers it would time float PyTorch rather than a GGUF runtime. "
        f"Export and evaluation seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in m["seconds"].items())
        + f". Load average (1 min) while measuring, the 2-core machine being shared: {load[0]:.2f} before, "
        f"{load[1]:.2f} after; latency figures are indicative.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="A built triage project (folder or distil.yaml).")
    parser.add_argument("--run", help="The run to export (default: the one `distil serve` would pick).")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (1 on a busy machine).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    spec_path = built_project(args.project)
    before = os.getloadavg()[0]
    measured = measure(spec_path, args.run, args.threads)
    body = section_body(measured, (before, os.getloadavg()[0]), args.threads)
    print(body)
    if not args.no_write:
        write_section(
            "export_sizes",
            "Triage student exported: size on disk and agreement with the teacher per format",
            body,
            command="python benchmarks/export_sizes.py"
            + (f" --project {args.project}" if args.project else "")
            + (f" --run {args.run}" if args.run else "")
            + (f" --threads {args.threads}" if args.threads != 2 else ""),
        )


if __name__ == "__main__":
    main()
