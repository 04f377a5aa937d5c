"""An OpenAI-compatible Chat Completions server that injects faults, for reliability tests.

A plain asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) on 127.0.0.1, run in a background
thread, so it can do what a framework would not: reset a connection, cut a body short, or sit past the
client's timeout. Answers come from the keyword model of tests/teachers/openai_server.py.

Which fault a request gets is decided by sha256(seed, prompt, attempt number for that prompt), so a
run is reproducible whatever order concurrent requests arrive in. ``max_faults_per_prompt`` bounds the
faults one prompt can get, so a client with that many retries is guaranteed to finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field

from tests.teachers.openai_server import _keyword_answer

FAULTS = ("429", "500", "503", "reset", "timeout", "truncated", "malformed", "no_logprobs")


@dataclass
class FaultConfig:
    """Rates are probabilities per request (their sum must be ≤ 1); ``no_logprobs`` is a 200 without logprobs."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    max_faults_per_prompt: int = 3
    retry_after: str = "0.01"
    timeout_sleep_s: float = 1.0  # how long a "timeout" request sits before the server drops it
    delay_s: float = 0.0  # added to every answer (to slow a run down for kill tests)
    models: tuple[str, ...] = ("keyword",)
    permanent_status: int | None = None  # e.g. 401: every request after ``permanent_after`` successes gets it
    permanent_after: int = 0


@dataclass
class FaultStats:
    requests: Counter = field(default_factory=Counter)  # prompt -> requests received
    answered: Counter = field(default_factory=Counter)  # prompt -> well-formed 200 answers sent
    faults: Counter = field(default_factory=Counter)  # fault kind -> how many were injected
    faults_per_prompt: Counter = field(default_factory=Counter)
    authorization: list[str] = field(default_factory=list)  # Authorization headers seen
    in_flight: int = 0  # chat requests being answered now
    max_in_flight: int = 0  # the most at once

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


def _pick_fault(config: FaultConfig, prompt: str, attempt: int) -> str | None:
    digest = hashlib.sha256(f"{config.seed}|{prompt}|{attempt}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for kind in FAULTS:
        edge += config.rates.get(kind, 0.0)
        if draw < edge:
            return kind
    return None


def _response(status: int, body: bytes, extra: dict[str, str] | None = None, length: int | None = None) -> bytes:
    reason = {
        200: "OK",
        401: "Unauthorized",
        404: "Not Found",
        400: "Bad Request",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body) if length is None else length),
        **(extra or {}),
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def _answer(body: dict, with_logprobs: bool) -> bytes:
    prompt = body["messages"][-1]["content"]
    text, tops = _keyword_answer(prompt)
    k = int(body.get("top_logprobs") or 0)
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if with_logprobs and body.get("logprobs"):
        top = [{"token": t, "logprob": lp} for t, lp in tops[:k]]
        choice["logprobs"] = {"content": [{"token": tops[0][0], "logprob": tops[0][1], "top_logprobs": top}]}
    return json.dumps({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice]}).encode()


class FaultServer:
    """``with FaultServer(FaultConfig(...)) as server:`` -> ``server.base_url`` (ends in /v1), ``server.stats``."""

    def __init__(self, config: FaultConfig | None = None):
        self.config = config or FaultConfig()
        self.stats = FaultStats()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def source(self, model: str = "keyword") -> str:
        return f"openai:{self.base_url}#{model}"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("fault server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 22)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- one connection -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {
                    k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._respond(method, path, headers, raw, writer):
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def _respond(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one answer (or fault); False when the connection must end."""
        if method != "POST" or not path.endswith("/chat/completions"):
            writer.write(_response(404, b'{"error": {"message": "not found"}}'))
            await writer.drain()
            return True
        with self._lock:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._answer_chat(headers, raw, writer)
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    async def _answer_chat(self, headers: dict[str, str], raw: bytes, writer: asyncio.StreamWriter) -> bool:
        config = self.config
        body = json.loads(raw)
        prompt = body["messages"][-1]["content"]
        with self._lock:
            attempt = self.stats.requests[prompt]
            self.stats.requests[prompt] += 1
            self.stats.authorization.append(headers.get("authorization", ""))
            answered_total = sum(self.stats.answered.values())
        if body.get("model") not in config.models:
            writer.write(
                _response(
                    404, json.dumps({"error": {"message": f"model {body.get('model')!r} does not exist"}}).encode()
                )
            )
            await writer.drain()
            return True
        if config.permanent_status is not None and answered_total >= config.permanent_after:
            writer.write(_response(config.permanent_status, b'{"error": {"message": "invalid api key"}}'))
            await writer.drain()
            return True
        fault = (
            _pick_fault(config, prompt, attempt)
            if self.stats.faults_per_prompt[prompt] < config.max_faults_per_prompt
            else None
        )
        if fault is not None:
            with self._lock:
                self.stats.faults[fault] += 1
                if fault != "no_logprobs":
                    self.stats.faults_per_prompt[prompt] += 1
        if config.delay_s:
            await asyncio.sleep(config.delay_s)
        error = b'{"error": {"message": "injected"}}'
        if fault == "429":
            writer.write(_response(429, error, {"Retry-After": config.retry_after}))
        elif fault in ("500", "503"):
            writer.write(_response(int(fault), error))
        elif fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
            writer.transport.abort()
            return False
        elif fault == "timeout":
            await asyncio.sleep(config.timeout_sleep_s)
            writer.transport.abort()
            return False
        elif fault == "truncated":
            whole = _answer(body, True)
            writer.write(_response(200, whole[: len(whole) // 2], length=len(whole)))
            await writer.drain()
            writer.transport.abort()
            return False
        elif fault == "malformed":
            writer.write(_response(200, b'{"id": "x", "choices": [{"index": 0, "message": '))
        else:
            writer.write(_response(200, _answer(body, fault != "no_logprobs")))
            with self._lock:
                self.stats.answered[prompt] += 1
        await writer.drain()
        return True
