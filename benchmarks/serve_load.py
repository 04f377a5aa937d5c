"""Load on `/v1/classify`, two ways.

Latency (default; writes docs/benchmarks.md): 8 concurrent clients on loopback, bounded in time, for the
student, the teacher and the routed stack; plus the router's own overhead, measured without any model.
Models: the embedded teacher SmolLM2-135M-Instruct (few-shot prompt, calibrated) and a student made of 6 of
its 30 layers (copied, untrained: latency does not depend on training), asked with the bare input. `--tiny`
uses tiny random models instead (for a smoke run).

Holding under load (`--hold`; writes docs/reliability.md): `distil serve` as its own process on a tiny random
student, student-only and with escalation to an OpenAI-compatible teacher server on 127.0.0.1 that this
script starts (the fault server of tests/reliability, faults off, a fixed delay per answer), at 1, 10, 50 and
200 clients for a fixed time each: the share answered, refused with 429 and neither; latency percentiles;
the share finished within 2 s; `/healthz` latency probed throughout; the server's RSS before and after; and
300 connections trickling their headers while real requests are sent.

    python benchmarks/serve_load.py                  # 3 × 10 s per target, writes docs/benchmarks.md
    python benchmarks/serve_load.py --tiny --seconds 1 --repeats 1 --no-write
    python benchmarks/serve_load.py --hold           # 10 s per client count, writes docs/reliability.md
    python benchmarks/serve_load.py --hold --seconds 2 --no-write
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TEXTS = [
    json.loads(line)["input"]
    for line in (ROOT / "examples" / "triage" / "gold.jsonl").read_text().splitlines()
    if line.strip()
]


def build_models(tiny: bool, workdir: Path):
    """(student predictor, teacher predictor, labels)."""
    from distil.serve.runs import LockedPredictor
    from distil.spec.io import load_project
    from distil.teachers.hf_local import HFLocalTeacher
    from distil.teachers.loading import load_causal_lm
    from distil.teachers.registry import seed_shots
    from distil.train.students import label_token_ids, load_predictor, student_from_teacher_layers

    project = load_project(ROOT / "examples" / "triage")
    spec = project.spec
    labels = spec.task.label_names
    if tiny:
        from tests.conftest import build_tiny_causal_lm

        teacher_dir = build_tiny_causal_lm(workdir / "teacher", layers=4)
        teacher_spec = spec.teachers[0].model_copy(update={"source": f"hf:{teacher_dir}"})
        n_layers = 2
    else:
        teacher_spec = spec.teachers[0]
        n_layers = 6
    model, tokenizer, fingerprint = load_causal_lm(teacher_spec.source)
    teacher = HFLocalTeacher(
        teacher_spec, spec.task, seed_shots(project), model=model, tokenizer=tokenizer, fingerprint=fingerprint
    )
    student_dir = workdir / "student"
    student_from_teacher_layers(model, n_layers).save_pretrained(student_dir)
    tokenizer.save_pretrained(student_dir)
    task = {
        "kind": "classify",
        "labels": labels,
        "label_token_ids": label_token_ids(tokenizer, labels),
        "prompt_template": "Ticket: {input}\nCategory:",
        "max_length": 256,
        "max_new_tokens": 16,
    }
    (student_dir / "distil_task.json").write_text(json.dumps(task))
    return LockedPredictor(load_predictor(student_dir)), LockedPredictor(teacher), labels


def load(url: str, seconds: float, clients: int = 8, max_requests: int = 100_000) -> dict[str, float]:
    """``clients`` threads posting one ticket each to /v1/classify until ``seconds`` pass."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            i = k
            while time.monotonic() < deadline and len(latencies) < max_requests:
                start = time.perf_counter()
                r = c.post("/v1/classify", json={"input": TEXTS[i % len(TEXTS)]})
                took = time.perf_counter() - start
                with lock:
                    if r.status_code == 200:
                        latencies.append(took)
                    else:
                        errors[0] += 1
                i += clients

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    ms = np.array(latencies) * 1000
    return {
        "n": len(ms),
        "errors": errors[0],
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else float("nan"),
        "rps": len(ms) / wall,
    }


def router_overhead_us(labels: list[str], n: int = 20_000) -> dict[str, float]:
    """Per-request time of Router.route around predictors that return at once (no model)."""
    from distil.serve.router import Router

    fixed = np.array([[0.7, 0.2, 0.1]])
    router = Router(lambda texts: fixed, lambda texts: fixed[:, ::-1].copy(), labels, threshold=0.5)
    for _ in range(500):
        router.route(["warm up"])
    times = []
    for _ in range(n):
        start = time.perf_counter()
        router.route(["a ticket"])
        times.append(time.perf_counter() - start)
    us = np.array(times) * 1e6
    return {"p50_us": float(np.percentile(us, 50)), "p95_us": float(np.percentile(us, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Load per run per target (at most 30).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per target; the median is reported.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="Tiny random models instead of SmolLM2-135M.")
    parser.add_argument(
        "--hold", action="store_true", help="Backpressure, probes and memory of `distil serve` (docs/reliability.md)."
    )
    parser.add_argument("--no-write", action="store_true", help="Print only; leave the docs alone.")
    args = parser.parse_args()
    if args.hold:
        from _serve_hold import hold_main

        hold_main(min(args.seconds, 30.0), write=not args.no_write)
    else:
        latency_main(args)


def latency_main(args: argparse.Namespace) -> None:
    seconds = min(args.seconds, 30.0)

    from distil.serve.router import NEVER
    from distil.serve.runs import ServedModel
    from distil.serve.server import create_app
    from distil.spec.models import ServeSpec
    from tests.serve.conftest import running_server

    workdir = Path(tempfile.mkdtemp(prefix="distil-serve-bench-"))
    try:
        student, teacher, labels = build_models(args.tiny, workdir)
        # As `distil serve` does: each model behind a micro-batcher (concurrent requests share a pass).
        # Each model behind its micro-batcher, as `distil serve` puts it; deadlines long enough that nothing is
        # refused (this part measures latency, --hold measures refusals).
        patient = ServeSpec(deadline_s=600, teacher_deadline_s=600, queue_depth=10_000)
        targets = {
            "student, one pass per request (no micro-batching)": ServedModel(
                "bench", "classify", labels, student, None, 0.0, limits=patient.model_copy(update={"max_batch": 1})
            ),
            "student (threshold 0: nothing escalates)": ServedModel(
                "bench", "classify", labels, student, None, 0.0, limits=patient
            ),
            "teacher (served directly)": ServedModel("bench", "classify", labels, teacher, None, 0.0, limits=patient),
            "router, everything escalated (student + teacher)": ServedModel(
                "bench", "classify", labels, student, teacher, NEVER, limits=patient
            ),
        }
        results = {}
        for name, served in targets.items():
            runs = []
            with running_server(create_app(served)) as (url, _):
                load(url, min(2.0, seconds))  # warm-up, not reported
                for _ in range(args.repeats):
                    runs.append(load(url, seconds, args.clients))
            results[name] = {
                k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p95_ms", "rps", "n", "errors")
            }
            print(name, results[name], flush=True)
        overhead = router_overhead_us(labels)
        print("router overhead", overhead)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if args.no_write:
        return
    from _report import markdown_table, write_section

    model = (
        "tiny random Llama (4 layers) and a 2-layer student"
        if args.tiny
        else "SmolLM2-135M-Instruct teacher (few-shot, calibrated) and a 6-layer student cut from it"
    )
    rows = [
        [name, f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['rps']:.1f}", int(r["n"]), int(r["errors"])]
        for name, r in results.items()
    ]
    body = (
        f"`/v1/classify`, one ticket per request, {args.clients} concurrent clients on 127.0.0.1, {seconds:.0f} s "
        f"per run, median of {args.repeats} runs after a warm-up; server and clients in one process (uvicorn in a "
        f"thread), CPU only. Models: {model}.\n\n"
        + markdown_table(["target", "p50 ms", "p95 ms", "requests/s", "requests (median run)", "errors"], rows)
        + f"\n\nRouter overhead (routing one input around predictors that answer at once, {20_000:,} calls): p50 "
        f"{overhead['p50_us']:.1f} µs, p95 {overhead['p95_us']:.1f} µs.\nEach model runs one forward pass at a time; "
        "with micro-batching the requests waiting meanwhile (up to 32 inputs, at most 2 ms extra wait) share the "
        "next pass. The machine's 2 cores were shared with other work while this ran, so treat the figures as "
        "indicative. There is no GPU on this machine, so no GPU figures are given."
    )
    write_section("serve_load", "Serving: /v1/classify under load", body)


if __name__ == "__main__":
    main()
