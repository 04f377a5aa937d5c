"""The API teacher's throughput against a local OpenAI-compatible server that answers in 50 ms.

The server runs in its own process (uvicorn); the client keeps ``--concurrency`` requests in flight.
The ideal rate is concurrency / latency (64 / 0.05 s = 1,280 requests/s).

Usage: python benchmarks/data_api.py [--requests 2048] [--concurrency 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import markdown_table, write_section  # noqa: E402


def serve(port: int, latency: float) -> None:
    import asyncio

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        await asyncio.sleep(latency)
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "billing"},
                             "logprobs": {"content": [{"token": " billing", "logprob": -0.1, "top_logprobs": [{"token": " billing", "logprob": -0.1}, {"token": " account", "logprob": -2.4}]}]}}]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.latency)
        return

    import httpx

    from distil.spec.io import load_project
    from distil.teachers.registry import build_teacher
    from tests.data.helpers import make_project

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(args.latency)])
    try:
        for _ in range(200):
            try:
                httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        spec_path = make_project(Path(tempfile.mkdtemp()), f"openai:http://127.0.0.1:{port}/v1#bench")
        text = spec_path.read_text().replace("licence:", f"max_concurrency: {args.concurrency}\n  licence:", 1)
        spec_path.write_text(text)
        teacher = build_teacher(load_project(spec_path))
        prompts = [f"ticket {i}" for i in range(args.requests)]
        teacher.complete(prompts[: args.concurrency])  # warm up connections
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            teacher.complete(prompts)
            rates.append(args.requests / (time.perf_counter() - start))
    finally:
        server.terminate()
        server.wait(timeout=10)
    ideal = args.concurrency / args.latency
    rate = statistics.median(rates)
    print(f"{rate:.0f} req/s, ideal {ideal:.0f}, ratio {rate / ideal:.2f}")
    body = (
        f"{args.requests} Chat Completions requests (logprobs on) to a local uvicorn server in its own process that answers "
        f"after {args.latency * 1000:.0f} ms, {args.concurrency} in flight (httpx async, one client process). Median of {args.repeats} runs. "
        "Target: ≥ 0.8× the ideal rate. "
        f"Load average while measuring (the machine is shared): {os.getloadavg()[0]:.1f}.\n\n"
        + markdown_table(["in flight", "requests/s", "ideal requests/s", "fraction of ideal"], [[args.concurrency, f"{rate:.0f}", f"{ideal:.0f}", f"{rate / ideal:.2f}"]])
    )
    if not args.no_write:
        write_section("data_api", "API teacher throughput", body)


if __name__ == "__main__":
    main()
