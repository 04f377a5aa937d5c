"""The OpenAI files and batches endpoints for tests, an aiohttp server on 127.0.0.1 in a background thread.

A batch is answered line by line with the same Chat Completions bodies as tests/teachers/openai_server.py.
``hold = True`` keeps every batch ``in_progress`` (a provider still working) until the test clears it;
``fail_prompts`` makes the lines whose prompt contains one of them fail with status 500 (they land in the error
file, as OpenAI reports them). Every upload and batch is kept, so a test can count what it was charged for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from dataclasses import dataclass, field

from aiohttp import web

from tests.teachers.openai_server import ServerState, chat_answer


@dataclass
class BatchState:
    chat: ServerState = field(default_factory=ServerState)
    hold: bool = False
    fail_prompts: tuple[str, ...] = ()
    files: dict[str, bytes] = field(default_factory=dict)
    uploads: list[dict] = field(default_factory=list)  # {"purpose", "filename", "lines"} per upload
    batches: dict[str, dict] = field(default_factory=dict)
    polls: int = 0
    authorization: list[str] = field(default_factory=list)
    ids: itertools.count = field(default_factory=itertools.count)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids)}"


def _finish(state: BatchState, batch: dict) -> None:
    """Answer every line of ``batch``'s input file; write its output and error files."""
    answered, failed = [], []
    for line in state.files[batch["input_file_id"]].decode().splitlines():
        request = json.loads(line)
        prompt = request["body"]["messages"][-1]["content"]
        if any(bad in prompt for bad in state.fail_prompts):
            failed.append(
                {
                    "id": state.new_id("batch_req"),
                    "custom_id": request["custom_id"],
                    "response": {"status_code": 500, "body": {"error": {"message": "the model is overloaded"}}},
                    "error": None,
                }
            )
            continue
        body = chat_answer(state.chat, request["body"])
        answered.append(
            {
                "id": state.new_id("batch_req"),
                "custom_id": request["custom_id"],
                "response": {"status_code": 200, "request_id": state.new_id("req"), "body": body},
                "error": None,
            }
        )
    for key, lines in (("output_file_id", answered), ("error_file_id", failed)):
        if lines:
            file_id = state.new_id("file")
            state.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
            batch[key] = file_id
    batch["status"] = "completed"
    batch["request_counts"] = {"total": len(answered) + len(failed), "completed": len(answered), "failed": len(failed)}


def build_app(state: BatchState) -> web.Application:
    async def upload(request: web.Request) -> web.Response:
        state.authorization.append(request.headers.get("Authorization", ""))
        form = await request.post()
        content = form["file"].file.read()
        file_id = state.new_id("file")
        state.files[file_id] = content
        state.uploads.append(
            {"purpose": form["purpose"], "filename": form["file"].filename, "lines": content.decode().splitlines()}
        )
        return web.json_response({"id": file_id, "object": "file", "bytes": len(content), "purpose": "batch"})

    async def content(request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if file_id not in state.files:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=state.files[file_id], content_type="application/jsonl")

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in state.files or body.get("endpoint") != "/v1/chat/completions":
            return web.json_response({"error": {"message": "bad batch request"}}, status=400)
        batch_id = state.new_id("batch")
        lines = len(state.files[body["input_file_id"]].decode().splitlines())
        state.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "request_counts": {"total": lines, "completed": 0, "failed": 0},
        }
        return web.json_response(state.batches[batch_id])

    async def status(request: web.Request) -> web.Response:
        state.polls += 1
        batch = state.batches.get(request.match_info["batch_id"])
        if batch is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        if batch["status"] not in ("completed", "failed", "expired", "cancelled"):
            if state.hold:
                batch["status"] = "in_progress"
            else:
                await asyncio.to_thread(_finish, state, batch)
        return web.json_response(batch)

    app = web.Application()
    app.router.add_post("/v1/files", upload)
    app.router.add_get("/v1/files/{file_id}/content", content)
    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches/{batch_id}", status)
    return app


class RunningBatchServer:
    """The aiohttp app in a background thread's event loop; ``base_url`` ends in /v1."""

    def __init__(self, state: BatchState):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.state = state
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(build_app(state))
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RunningBatchServer:
        self.thread.start()
        if not self.started.wait(20):
            raise RuntimeError("batch test server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
