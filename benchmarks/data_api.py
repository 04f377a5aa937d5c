"""The API teacher's throughput against a local OpenAI-compatible server that answers in 50 ms.

The server runs in its own process and stands in for a remote API; the client keeps ``--concurrency``
requests in flight. The ideal rate is concurrency / latency (64 / 0.05 s = 1,280 requests/s).

Two servers: ``lean``, a plain asyncio HTTP/1.1 server (keep-alive, one fixed answer, the request body
parsed as JSON) that spends little CPU per request, so the client is what is measured; and ``fastapi``,
a FastAPI app under uvicorn as installed with distil. Against each, four clients: the distil adapter
(``OpenAICompatTeacher`` through ``build_teacher``); as ceilings, bare aiohttp and httpx loops with no
distil code, and raw sockets with no HTTP library. Against the lean server the adapter also runs with
twice as many in flight. Each row also gives the time one request really took and the CPU time per
request of the client and of the server process.

Usage: python benchmarks/data_api.py [--requests 2048] [--concurrency 64] [--repeats 3] [--httpx-requests 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import markdown_table, write_section  # noqa: E402

ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "model": "bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "billing"},
            "finish_reason": "stop",
            "logprobs": {
                "content": [
                    {
                        "token": " billing",
                        "logprob": -0.1,
                        "top_logprobs": [
                            {"token": " billing", "logprob": -0.1},
                            {"token": " account", "logprob": -2.4},
                        ],
                    }
                ]
            },
        }
    ],
}
SERVERS = {
    "lean": "plain asyncio HTTP/1.1 server",
    "fastapi": "FastAPI under uvicorn",
}


# --- the servers (each runs in its own process: ``--serve PORT --server NAME``) ---------------------


def serve_lean(port: int, latency: float) -> None:
    """HTTP/1.1 with keep-alive and Content-Length bodies: enough for a Chat Completions client."""
    body = json.dumps(ANSWER).encode()
    response = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    class ChatCompletions(asyncio.Protocol):
        def connection_made(self, transport):  # noqa: ANN001 - an asyncio transport
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                length = 0
                for line in self.buffer[:end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return  # the body is still on its way
                json.loads(self.buffer[end + 4 : end + 4 + length])  # a real server reads the request
                self.buffer = self.buffer[end + 4 + length :]
                asyncio.get_running_loop().call_later(latency, self.answer)

        def answer(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(response)

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(ChatCompletions, "127.0.0.1", port, backlog=1024)
        await server.serve_forever()

    asyncio.run(run())


def serve_fastapi(port: int, latency: float) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        await asyncio.sleep(latency)
        return ANSWER

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the clients --------------------------------------------------------------------------------------

BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "ticket 1"}],
    "max_tokens": 1,
    "temperature": 0.0,
    "logprobs": True,
    "top_logprobs": 5,
}


async def aiohttp_loop(url: str, n: int, concurrency: int) -> None:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def one() -> None:
            async with gate, session.post(url, json=BODY) as response:
                await response.json()

        await asyncio.gather(*(one() for _ in range(n)))


async def httpx_loop(url: str, n: int, concurrency: int) -> None:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one() -> None:
            async with gate:
                (await client.post(url, json=BODY)).json()

        await asyncio.gather(*(one() for _ in range(n)))


async def socket_loop(port: int, n: int, concurrency: int) -> None:
    """No HTTP library: one pre-encoded request at a time on each of ``concurrency`` keep-alive sockets."""
    body = json.dumps(BODY).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: "
        b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )

    async def connection(count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            json.loads(await reader.readexactly(length))
        writer.close()

    await asyncio.gather(*(connection(n // concurrency + (i < n % concurrency)) for i in range(concurrency)))


def adapter(port: int, concurrency: int) -> Callable[[int], None]:
    """The distil teacher, built from a spec the way ``distil generate`` builds it."""
    from distil.spec.io import load_project
    from distil.teachers.registry import build_teacher
    from tests.data.helpers import make_project

    spec_path = make_project(Path(tempfile.mkdtemp()), f"openai:http://127.0.0.1:{port}/v1#bench")
    text = spec_path.read_text().replace("licence:", f"max_concurrency: {concurrency}\n  licence:", 1)
    spec_path.write_text(text)
    teacher = build_teacher(load_project(spec_path))

    def send(n: int) -> None:
        answers = teacher.complete([f"ticket {i}" for i in range(n)], max_tokens=1)
        assert len(answers) == n and answers[-1].top_logprobs, (
            "the adapter should return every answer with its logprobs"
        )

    return send


# --- measuring ------------------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(send: Callable[[int], None], n: int, repeats: int, concurrency: int, server_pid: int) -> dict[str, float]:
    """Median rate of ``repeats`` runs of ``n`` requests, with CPU ms per request of client and server."""
    send(concurrency)  # open the connections and import what the client imports
    rates, client_ms, server_ms = [], [], []
    for _ in range(repeats):
        start, client0, server0 = time.perf_counter(), own_cpu_s(), process_cpu_s(server_pid)
        send(n)
        rates.append(n / (time.perf_counter() - start))
        client_ms.append((own_cpu_s() - client0) / n * 1000)
        server_ms.append((process_cpu_s(server_pid) - server0) / n * 1000)
    return {
        "rate": statistics.median(rates),
        "client_ms": statistics.median(client_ms),
        "server_ms": statistics.median(server_ms),
    }


def start_server(name: str, latency: float) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--server", name, "--latency", str(latency)]
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"the {name} server did not start") from None
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2048)
    parser.add_argument("--httpx-requests", type=int, default=512, help="fewer for the bare httpx loop, which is slow")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--servers", default="lean,fastapi")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--server", default="lean", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.serve:
        {"lean": serve_lean, "fastapi": serve_fastapi}[args.server](args.serve, args.latency)
        return

    c, ideal = args.concurrency, args.concurrency / args.latency
    rows, loads = [], [os.getloadavg()[0]]
    for name in args.servers.split(","):
        server, port = start_server(name, args.latency)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        clients = [  # (client, requests, in flight, send)
            ("distil adapter (aiohttp)", args.requests, c, adapter(port, c)),
            ("bare aiohttp loop", args.requests, c, lambda n, url=url: asyncio.run(aiohttp_loop(url, n, c))),
            ("bare httpx loop", args.httpx_requests, c, lambda n, url=url: asyncio.run(httpx_loop(url, n, c))),
            (
                "raw sockets, no HTTP library",
                args.requests,
                c,
                lambda n, port=port: asyncio.run(socket_loop(port, n, c)),
            ),
        ]
        if (
            name == "lean"
        ):  # twice as many in flight: does the machine have the throughput, is it latency that is short?
            clients.append(("distil adapter (aiohttp)", 2 * args.requests, 2 * c, adapter(port, 2 * c)))
        try:
            for client, n, in_flight, send in clients:
                result = measure(send, n, args.repeats, in_flight, server.pid)
                loads.append(os.getloadavg()[0])
                rate, row_ideal = result["rate"], in_flight / args.latency
                print(
                    f"{name:8s} {client:29s} {in_flight:4d} in flight {rate:6.0f} req/s ({rate / row_ideal:.2f} of "
                    f"ideal), client {result['client_ms']:.2f} ms CPU/request, server {result['server_ms']:.2f}, "
                    f"load {loads[-1]:.1f}",
                    flush=True,
                )
                rows.append(
                    [
                        SERVERS[name],
                        client,
                        in_flight,
                        n,
                        f"{rate:.0f}",
                        f"{rate / row_ideal:.2f}",
                        f"{in_flight / rate * 1000:.0f}",
                        f"{result['client_ms']:.2f}",
                        f"{rate * result['client_ms'] / 10:.0f}%",
                        f"{result['server_ms']:.2f}",
                    ]
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    body = (
        "Chat Completions requests (logprobs on) to a local server in its own process that answers after "
        f"{args.latency * 1000:.0f} ms, from one client process; with {args.concurrency} in flight the ideal rate is "
        f"{ideal:.0f} requests/s. Median of {args.repeats} runs. Target for the distil adapter: ≥ 0.8× the ideal "
        f"rate with {args.concurrency} in flight. The {SERVERS['lean']} (keep-alive, one fixed answer, the request "
        f"body parsed as JSON) stands in for a remote API and spends little CPU per request; {SERVERS['fastapi']} is "
        "the framework server as installed with distil. The bare loops (no distil code) are the ceiling of each "
        "client library on this machine; the raw-socket loop (pre-encoded requests written on keep-alive sockets, "
        "answers parsed as JSON) is the machine's own ceiling. Time per request = in flight / rate: how long one "
        f"request really took, against the server's {args.latency * 1000:.0f} ms. CPU columns: CPU time per request "
        "of the client process and of the server process; client busy = rate × client CPU time, the share of one "
        "core the client used. When the client is far from a full core and more requests in flight raise the rate, "
        "what falls short is latency added to each request (waiting in the client's event loop behind other "
        "answers, and for a CPU), not the machine's throughput. Load average (1 min) while measuring, the machine "
        f"being shared: {min(loads):.1f} to {max(loads):.1f}.\n\n"
        + markdown_table(
            [
                "server",
                "client",
                "in flight",
                "requests",
                "requests/s",
                "fraction of ideal",
                "time per request (ms)",
                "client CPU ms/request",
                "client busy",
                "server CPU ms/request",
            ],
            rows,
        )
    )
    if not args.no_write:
        write_section("data_api", "API teacher throughput", body)


if __name__ == "__main__":
    main()
