"""`python benchmarks/serve_load.py --hold`: does `distil serve` hold under load? Writes its section of
docs/reliability.md.

`distil serve` runs as its own process on a tiny random student (a 2-layer Llama of hidden size 32, as the
tests build), once student-only and once escalating its least confident share to a teacher: the fault server
of tests/reliability (an OpenAI-compatible Chat Completions server, faults off, a fixed delay per answer) in
a process of its own on 127.0.0.1. Clients are asyncio tasks in this process, one connection each; a client
sends one ticket, waits for the answer, and after a 429 waits the `Retry-After` it was given, as OpenAI's
SDKs do. `/healthz` is probed every 100 ms throughout, from a thread of this process; and, for 50 and 200
clients once more, from a process of its own while this process's load runs at nice 10, so that the figure is
the server's and not the load generator's (both share the machine's cores). The server's RSS is read from /proc
before the first run and a few seconds after the last.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
CLIENT_COUNTS = (1, 10, 50, 200)
TEACHER_DELAY_S = 0.2  # a remote teacher's answer time, roughly
ESCALATED_SHARE = 0.3  # the router's threshold is set so about this share of tickets escalates
WITHIN_S = 2.0  # the target: every request answered or refused within this
SLOW_CONNECTIONS = 300
TEXTS = [
    json.loads(line)["input"]
    for line in (ROOT / "examples" / "triage" / "gold.jsonl").read_text().splitlines()
    if line.strip()
]

TEACHER_PROCESS = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.reliability.fault_server import FaultConfig, FaultServer
with FaultServer(FaultConfig(delay_s=float(sys.argv[2]))) as server:
    print(server.port, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


PROBE_PROCESS = """
import http.client, json, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ms, failed, end = [], 0, time.monotonic() + seconds
conn = http.client.HTTPConnection(host, port, timeout=10)
while time.monotonic() < end:
    start = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        answer.read()
        ok = answer.status == 200
    except (OSError, http.client.HTTPException):
        ok = False
        conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=10)
    if ok:
        ms.append((time.perf_counter() - start) * 1000)
    else:
        failed += 1
    time.sleep(0.1)
print(json.dumps({"ms": ms, "failed": failed}))
"""
NICED_CLIENT_COUNTS = (50, 200)
LOAD_NICE = 10


# --- the project and the processes ----------------------------------------------------------------------


def isolated_env(base: Path) -> dict[str, str]:
    """This process's environment with home, config and caches under ``base`` and nothing fetched."""
    return {
        **os.environ,
        "HOME": str(base / "home"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "DISTIL_CACHE": str(base / "cache" / "distil"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT / "src"),
    }


def build_project(base: Path, teacher_source: str) -> Path:
    """The triage spec on ``teacher_source`` with a tiny random student recorded as run r1; the spec's path."""
    from distil.spec.io import load_project
    from tests.reliability.helpers import fault_project, tickets
    from tests.serve.conftest import record_trained, write_classify_run

    spec = fault_project(base / "project", teacher_source, 12, seeds=tickets(12))
    project = load_project(spec)
    write_classify_run(project.runs_dir / "r1")
    record_trained(project, "r1")
    return spec


def escalation_threshold(student_folder: Path, share: float) -> float:
    """The student confidence below which ``share`` of the gold tickets fall."""
    from distil.train.students import load_predictor

    confidence = load_predictor(student_folder).label_distribution(TEXTS).max(axis=1)
    return float(np.quantile(confidence, share))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_teacher(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TEACHER_PROCESS, str(ROOT), str(TEACHER_DELAY_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    return proc, int(proc.stdout.readline())


def start_server(spec: Path, env: dict[str, str], extra: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "distil", "serve", "r1", "--spec", str(spec), "--port", str(port)]
    command += ["--as", "ops", "--allow-unshipped", *extra]
    proc = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"distil serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("distil serve did not start within 300 s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- load -------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    clients: int
    seconds: float
    outcomes: list[tuple[object, float]] = field(default_factory=list)  # (status or "error", ms) per request
    routes: Counter = field(default_factory=Counter)  # of the answered requests
    refusals: Counter = field(default_factory=Counter)  # the error code of each 429
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failed: int = 0

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    def share(self, status: object) -> float:
        return sum(s == status for s, _ in self.outcomes) / self.requests if self.requests else float("nan")

    @property
    def answered_ms(self) -> list[float]:
        return [ms for s, ms in self.outcomes if s == 200]

    @property
    def within(self) -> float:
        """Share of requests answered or refused with 429 within WITHIN_S."""
        good = sum(s in (200, 429) and ms <= WITHIN_S * 1000 for s, ms in self.outcomes)
        return good / self.requests if self.requests else float("nan")


class RawClient:
    """One keep-alive HTTP/1.1 connection written by hand: a load generator built on httpx spends more CPU per
    request than the server it measures, and here both share two cores."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, payload: object) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
            content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            self.writer.close()
        return int(lines[0].split(" ")[1]), headers, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _client(url: str, k: int, clients: int, stop_at: float, result: LoadResult) -> None:
    host, port = url.removeprefix("http://").split(":")
    client = RawClient(host, int(port))
    i = k
    try:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            wait = 0.0
            try:
                status, headers, content = await asyncio.wait_for(
                    client.post_json("/v1/classify", {"input": TEXTS[i % len(TEXTS)]}), 30
                )
                if status == 200:
                    result.routes[json.loads(content)["data"][0]["route"]] += 1
                elif status == 429:
                    wait = float(headers.get("retry-after", "1"))
                    result.refusals[json.loads(content)["error"]["code"]] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                status = "error"
                client.close()
            result.outcomes.append((status, (time.perf_counter() - start) * 1000))
            i += clients
            if wait:
                await asyncio.sleep(min(wait, max(0.0, stop_at - time.monotonic())))
    finally:
        client.close()


def _probe(url: str, stop: threading.Event, result: LoadResult) -> None:
    """/healthz every 100 ms from a thread of its own (not behind the clients' event loop)."""
    with httpx.Client(base_url=url, timeout=10) as c:
        while not stop.wait(0.1):
            start = time.perf_counter()
            try:
                ok = c.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                result.healthz_ms.append((time.perf_counter() - start) * 1000)
            else:
                result.healthz_failed += 1


async def _load(url: str, clients: int, seconds: float, result: LoadResult) -> None:
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, k, clients, stop_at, result) for k in range(clients)))


def run_load(url: str, clients: int, seconds: float) -> LoadResult:
    result = LoadResult(clients, seconds)
    stop = threading.Event()
    probe = threading.Thread(target=_probe, args=(url, stop, result), daemon=True)
    probe.start()
    try:
        asyncio.run(_load(url, clients, seconds, result))
    finally:
        stop.set()
        probe.join(15)
    return result


def run_load_niced(url: str, clients: int, seconds: float) -> LoadResult:
    """As :func:`run_load`, with the load from a thread at nice ``LOAD_NICE`` and `/healthz` probed from a process
    of its own at normal priority."""
    result = LoadResult(clients, seconds)
    host, port = url.removeprefix("http://").split(":")
    probe = subprocess.Popen([sys.executable, "-c", PROBE_PROCESS, host, port, str(seconds)], stdout=subprocess.PIPE)

    def load() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICE)  # this thread only (Linux)
        asyncio.run(_load(url, clients, seconds, result))

    loader = threading.Thread(target=load)
    loader.start()
    loader.join()
    probed = json.loads(probe.communicate(timeout=60)[0])
    result.healthz_ms, result.healthz_failed = probed["ms"], probed["failed"]
    return result


# --- slow connections --------------------------------------------------------------------------------------


def slow_connections(url: str, n: int = SLOW_CONNECTIONS, real: int = 20) -> dict[str, float]:
    """``n`` connections sending one header line every 2 s while ``real`` requests are sent one after another;
    then how many of the slow ones the server had closed 15 s later (its head deadline is 10 s)."""
    port = int(url.rsplit(":", 1)[1])
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
        sockets.append(s)
    stop = threading.Event()
    closed: set[int] = set()

    def drip() -> None:
        line = 0
        while not stop.wait(2.0):
            line += 1
            for i, s in enumerate(sockets):
                if i not in closed:
                    try:
                        s.sendall(f"X-Slow-{line}: a\r\n".encode())
                    except OSError:
                        closed.add(i)

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    ms, statuses = [], Counter()
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(real):
            start = time.perf_counter()
            try:
                statuses[c.post("/v1/classify", json={"input": TEXTS[i % len(TEXTS)]}).status_code] += 1
            except httpx.HTTPError:
                statuses["error"] += 1
            ms.append((time.perf_counter() - start) * 1000)
    open_during = n - len(closed)
    time.sleep(15)
    stop.set()
    dripper.join(5)
    for i, s in enumerate(sockets):  # EOF (or a reset) on read: the server closed it
        s.settimeout(0.5)
        try:
            if s.recv(64) == b"":
                closed.add(i)
        except TimeoutError:
            pass
        except OSError:
            closed.add(i)
        s.close()
    return {
        "n": n,
        "open_during": open_during,
        "real": real,
        "answered": statuses[200],
        "p50_ms": float(np.percentile(ms, 50)),
        "max_ms": float(max(ms)),
        "closed_after": len(closed),
    }


# --- the report ------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if values else "-"


def table_rows(mode: str, results: list[LoadResult]) -> list[list[object]]:
    rows = []
    for r in results:
        answered = len(r.answered_ms)
        teacher = r.routes["teacher"] / answered if answered else 0.0
        fallback = r.routes["student_fallback"] / answered if answered else 0.0
        other = max(0.0, 1 - r.share(200) - r.share(429))
        rows.append(
            [
                mode,
                r.clients,
                r.requests,
                f"{r.share(200):.1%}",
                f"{r.share(429):.1%}",
                " / ".join(f"{code} {n / sum(r.refusals.values()):.0%}" for code, n in r.refusals.most_common()) or "-",
                f"{other:.1%}",
                f"{r.within:.1%}",
                f"{_pct(r.answered_ms, 50)} / {_pct(r.answered_ms, 95)} / {_pct(r.answered_ms, 99)}",
                f"{max(ms for _, ms in r.outcomes):.0f}" if r.outcomes else "-",
                f"{teacher:.1%} / {fallback:.1%}" if mode != "student only" else "-",
                f"{_pct(r.healthz_ms, 50)} / {_pct(r.healthz_ms, 99)} / "
                + (f"{max(r.healthz_ms):.0f}" if r.healthz_ms else "-"),
                r.healthz_failed,
            ]
        )
    return rows


def hold_main(seconds: float, write: bool = True) -> None:
    base = Path(tempfile.mkdtemp(prefix="distil-serve-hold-"))
    env = isolated_env(base)
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONPATH"})
    teacher, teacher_port = start_teacher(env)
    rows, niced_rows, memory, slow = [], [], [], None
    try:
        spec = build_project(base, f"openai:http://127.0.0.1:{teacher_port}/v1#keyword")
        threshold = escalation_threshold(spec.parent / ".distil" / "runs" / "r1" / "student", ESCALATED_SHARE)
        modes = {
            "student only": ["--threshold", "0", "--no-teacher"],
            "with escalation": ["--threshold", repr(threshold)],
        }
        for mode, extra in modes.items():
            server, url = start_server(spec, env, extra, base / f"serve-{mode.replace(' ', '-')}.log")
            try:
                run_load(url, 4, 2.0)  # warm up: first passes, the teacher's content-free answer
                before = rss_mib(server.pid)
                results = []
                for clients in CLIENT_COUNTS:
                    result = run_load(url, clients, seconds)
                    results.append(result)
                    statuses = Counter(s for s, _ in result.outcomes)
                    print(mode, clients, dict(statuses), f"within {result.within:.1%}", flush=True)
                for clients in NICED_CLIENT_COUNTS:
                    result = run_load_niced(url, clients, seconds)
                    niced_rows += table_rows(mode, [result])
                    print(mode, clients, "niced load", f"/healthz p99 {_pct(result.healthz_ms, 99)} ms", flush=True)
                if mode == "student only":
                    slow = slow_connections(url)
                    print("slow connections", slow, flush=True)
                time.sleep(3)
                after = rss_mib(server.pid)
                run_load(url, CLIENT_COUNTS[-1], seconds)  # once more: does it keep growing, or has it peaked?
                time.sleep(3)
                again = rss_mib(server.pid)
                memory.append(
                    [
                        mode,
                        f"{before:.0f}",
                        f"{after:.0f} ({(after - before) / before:+.1%})",
                        f"{again:.0f} ({(again - before) / before:+.1%})",
                    ]
                )
                rows += table_rows(mode, results)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
    finally:
        teacher.stdin.close()
        teacher.wait(30)
        shutil.rmtree(base, ignore_errors=True)

    from _report import markdown_table, write_section

    headers = [
        "mode",
        "clients",
        "requests",
        "answered",
        "429",
        "429 by code",
        "neither",
        f"answered or 429 within {WITHIN_S:g} s",
        "answered p50 / p95 / p99 ms",
        "slowest ms",
        "teacher / fallback",
        "/healthz p50 / p99 / max ms",
        "/healthz failed",
    ]
    from distil.spec.models import ServeSpec

    limits = ServeSpec()
    body = (
        f"`distil serve` as its own process on a tiny random student (2-layer Llama, hidden 32), with the spec's "
        f"default `serve` limits (student queue {limits.queue_depth}, start within {limits.deadline_s:g} s; model "
        f"requests refused while the event loop runs more than {limits.max_loop_lag_s * 1000:g} ms behind; teacher "
        f"queue {limits.teacher_queue_depth}, answer within {limits.teacher_deadline_s:g} s); `/v1/classify`, one "
        f"ticket per request, {seconds:g} s per row after a warm-up. Clients are asyncio tasks in the benchmark's "
        f"process, one connection each, and honour `Retry-After` after a 429 as OpenAI's SDKs do. `429 by code` "
        f"splits the refusals: `server_busy` (the event loop was behind), `queue_full` (the student's queue was "
        f"full), `deadline_exceeded` (the student did not start on it in time). With escalation, the teacher is an "
        f"OpenAI-compatible server on 127.0.0.1 answering after {TEACHER_DELAY_S * 1000:.0f} ms, and the threshold "
        f"sends about {ESCALATED_SHARE:.0%} of the tickets to it; `teacher / fallback` is the share of answers that "
        f"came from the teacher / from the student because the teacher was saturated or slow (`student_fallback`). "
        f"`/healthz` was probed every 100 ms during each row; the connection answers it when its bytes arrive, so "
        f"it waits only for the event loop's turn, which the lag bound keeps short. Server, teacher and clients "
        f"share this machine's cores with other work (see the load average), so read the figures as what this "
        f"machine gave, not as a capacity.\n\n"
        + markdown_table(headers, rows)
        + f"\n\nThe same load for {' and '.join(map(str, NICED_CLIENT_COUNTS))} clients, `/healthz` probed from a "
        f"process of its own while the load generator ran at nice {LOAD_NICE} (the server at normal priority): "
        "what a load balancer on another machine would see, less the network:\n\n"
        + markdown_table(headers, niced_rows)
        + "\n\nServer memory (RSS, MiB): after the warm-up (before the first row), 3 s after the last row, and 3 s "
        f"after one more {CLIENT_COUNTS[-1]}-client row of {seconds:g} s (growth that stops there is a high-water "
        "mark — buffers, larger batches — not a leak). Before it listens, the server loads what its first requests "
        "would otherwise load (the traffic log's redaction, and pyarrow's row conversion, which imports pandas: "
        "40 MiB that used to arrive with the first traffic shard, after the reading before) and freezes the objects "
        "it started with out of the garbage collector's passes; about a second after a burst ends it returns the "
        "allocator's free pages to the system (`malloc_trim`):\n\n"
        + markdown_table(["mode", "before", "after the rows", "after one more row"], memory)
    )
    if slow:
        body += (
            f"\n\nSlow connections (student only): {slow['n']} connections each sending one header line every 2 s; "
            f"{slow['open_during']} were still open while {slow['real']} real requests were sent one after another: "
            f"{slow['answered']} answered, p50 {slow['p50_ms']:.0f} ms, slowest {slow['max_ms']:.0f} ms. 15 s later "
            f"the server had closed {slow['closed_after']} of them: it closes a connection whose request head is not "
            f"complete 10 s after it began (`serve.header_timeout_s`)."
        )
    print(body)
    if write:
        write_section(
            "serve_hold",
            "Serving under load: backpressure, probes and memory",
            body,
            command="python benchmarks/serve_load.py --hold",
            doc=DOC,
        )
