"""A small OpenAI-compatible Chat Completions server for tests, run by uvicorn on 127.0.0.1.

``model="tiny"`` answers with a real tiny causal LM (greedy decoding, real top logprobs);
``model="keyword"`` answers a classify prompt by the last ticket's keywords, with top logprobs that
say how sure it is. Faults are injected per server: ``fail_first`` requests get ``fail_status`` with
a Retry-After header, ``logprobs=False`` drops logprobs like a text-only provider, ``delay_s`` sleeps.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

KEYWORDS = {
    "billing": ("invoice", "charge", "refund"),
    "technical": ("crash", "error", "button"),
    "account": ("password", "login", "email"),
}


@dataclass
class ServerState:
    model: object = None
    tokenizer: object = None
    logprobs: bool = True
    fail_first: int = 0
    fail_status: int = 429
    retry_after: str | None = "0.05"
    delay_s: float = 0.0
    requests: int = 0
    bodies: list = field(default_factory=list)
    headers: list = field(default_factory=list)


def _keyword_answer(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    query = prompt.rsplit("Ticket:", 1)[-1].lower()
    scores = {label: 1 + 4 * sum(w in query for w in words) for label, words in KEYWORDS.items()}
    total = sum(scores.values())
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    # tokens as a BPE server would send them: leading space, sometimes a word piece
    tops = [
        (" " + label[:4] if i == 0 else " " + label, math.log(s / total * 0.9)) for i, (label, s) in enumerate(ranked)
    ]
    tops.append((" the", math.log(0.1)))
    return ranked[0][0], tops


def chat_answer(state: ServerState, body: dict) -> dict:
    """The Chat Completions response body for a request ``body``."""
    import torch

    prompt = body["messages"][-1]["content"]
    want = state.logprobs and body.get("logprobs")
    k = int(body.get("top_logprobs") or 0)
    if body["model"] == "keyword":
        text, tops = _keyword_answer(prompt)
        content = [
            {
                "token": tops[0][0],
                "logprob": tops[0][1],
                "top_logprobs": [{"token": t, "logprob": lp} for t, lp in tops[:k]],
            }
        ]
    else:
        tok, model = state.tokenizer, state.model
        ids = tok.apply_chat_template(
            body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        content, new = [], []
        with torch.inference_mode():
            for _ in range(int(body.get("max_tokens") or 8)):
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
                nxt = int(logprobs.argmax())
                top = torch.topk(logprobs, max(k, 1))
                # as vLLM sends them: each token's text, its UTF-8 bytes and log-probability, then the top k
                content.append(
                    {
                        "token": tok.decode([nxt]),
                        "logprob": float(logprobs[nxt]),
                        "bytes": list(tok.decode([nxt]).encode()),
                        "top_logprobs": [
                            {
                                "token": tok.decode([int(i)]),
                                "logprob": float(v),
                                "bytes": list(tok.decode([int(i)]).encode()),
                            }
                            for v, i in zip(top.values[:k], top.indices[:k], strict=True)
                        ],
                    }
                )
                new.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        text = tok.decode(new)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if want:
        choice["logprobs"] = {"content": content}
    return {"id": "x", "object": "chat.completion", "model": body["model"], "choices": [choice]}


def build_app(state: ServerState):
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        state.requests += 1
        state.bodies.append(body)
        state.headers.append(dict(request.headers))
        if state.requests <= state.fail_first:
            headers = {"Retry-After": state.retry_after} if state.retry_after else {}
            return JSONResponse({"error": {"message": "slow down"}}, status_code=state.fail_status, headers=headers)
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        return chat_answer(state, body)

    return app


class RunningServer:
    """uvicorn in a background thread; ``base_url`` ends in /v1."""

    def __init__(self, state: ServerState):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.state = state
        self.server = uvicorn.Server(
            uvicorn.Config(build_app(state), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
