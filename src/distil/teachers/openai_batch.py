"""Chat Completions sent through the OpenAI Batch API: one JSONL upload, one batch, polled, its output downloaded.

A batch is priced below live calls (OpenAI: half) and answered within its completion window rather than at once.
``teachers[].batch: true`` routes every call of an API teacher (labelling, rationales, writing synthetic inputs)
here instead of one request per prompt.

Resumable: each batch's id is recorded (``teacher.batch_submitted`` in the ledger) under the hash of the request
lines it was built from. When the same requests come again (a restarted ``distil generate``: the call cache
misses on exactly the calls that never came back), the recorded batches are polled and their output downloaded
instead of paying for the requests twice; only requests that none of them answered go into a new batch.
A batch still running after ``teachers[].batch_wait_s`` stops the command with its id; the next run picks it up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from distil.errors import TeacherError
from distil.ledger.store import canonical_json, sha256_text
from distil.teachers.batch_journal import BatchJournal
from distil.teachers.retries import RETRY_STATUS, retry_delay

BATCH_MAX_REQUESTS = 50_000  # the most request lines the OpenAI Batch API takes in one input file
ENDPOINT = "/v1/chat/completions"
FINISHED = {"completed", "failed", "expired", "cancelled"}  # a batch in any other state may still answer


def request_lines(bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One Batch API input line per request body; ``custom_id`` is its position, which is how answers come back."""
    return [{"custom_id": f"r{i}", "method": "POST", "url": ENDPOINT, "body": b} for i, b in enumerate(bodies)]


def answered_lines(jsonl: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A batch output (or error) file -> (custom_id -> response body, for the requests answered with a completion;
    the error messages of the others)."""
    answers, errors = {}, []
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            errors.append(f"an output line is not JSON: {line[:80]!r}")
            continue
        response = item.get("response") or {}
        body = response.get("body") if isinstance(response, dict) else None
        if item.get("error") or int(response.get("status_code") or 0) >= 400 or not _has_message(body):
            error = item.get("error") or (body or {}).get("error") or {}
            errors.append(str(error.get("message") if isinstance(error, dict) else error) or "no answer")
            continue
        answers[str(item["custom_id"])] = body
    return answers, errors


def _has_message(body: Any) -> bool:
    try:
        return isinstance(body["choices"][0]["message"], dict)
    except (TypeError, KeyError, IndexError):
        return False


@dataclass
class BatchClient:
    """The files and batches endpoints of one OpenAI-compatible server, with retries on transient faults."""

    session: Any  # aiohttp.ClientSession with the auth header set
    base_url: str  # ends in /v1
    public_base_url: str
    teacher_id: str
    proxy: dict[str, Any]
    max_retries: int = 5
    backoff_s: float = 0.5

    async def _call(self, method: str, path: str, **kwargs: Any) -> bytes:
        import aiohttp

        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with self.session.request(method, f"{self.base_url}{path}", **kwargs, **self.proxy) as response:
                    status, raw = response.status, await response.read()
                    retry_after = response.headers.get("Retry-After")
                if status < 400:
                    return raw
                if status not in RETRY_STATUS:
                    raise TeacherError(
                        f"teacher {self.teacher_id!r}: {method} {self.public_base_url}{path} answered HTTP {status}: "
                        f"{raw[:200].decode('utf-8', 'replace')}",
                        hint="check that the server offers the OpenAI files and batches endpoints, or set "
                        "teachers[].batch: false",
                    )
                last = f"HTTP {status}"
            except TimeoutError:
                last = "timed out"
            except aiohttp.ClientError as exc:
                last = type(exc).__name__
            if attempt < self.max_retries:
                await asyncio.sleep(retry_delay(attempt, retry_after, base=self.backoff_s))
        raise TeacherError(
            f"teacher {self.teacher_id!r}: {method} {self.public_base_url}{path} failed after "
            f"{self.max_retries + 1} attempts ({last})",
            hint="check that the server is up; the batches already submitted are in the ledger and are picked up "
            "by the next run",
        )

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        raw = await self._call(method, path, **kwargs)
        try:
            return json.loads(raw)
        except ValueError:
            raise TeacherError(
                f"teacher {self.teacher_id!r}: {method} {self.public_base_url}{path} answered with no JSON: "
                f"{raw[:200].decode('utf-8', 'replace')}"
            ) from None

    async def upload(self, lines: Sequence[dict[str, Any]]) -> str:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        form.add_field("file", content, filename="requests.jsonl", content_type="application/jsonl")
        return str((await self._json("POST", "/files", data=form))["id"])

    async def create(self, input_file_id: str) -> dict[str, Any]:
        body = {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h"}
        return await self._json("POST", "/batches", json=body)

    async def status(self, batch_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/batches/{batch_id}")

    async def content(self, file_id: str) -> str:
        return (await self._call("GET", f"/files/{file_id}/content")).decode("utf-8")

    async def wait(self, batch_id: str, poll_s: float, deadline: float) -> dict[str, Any]:
        """The batch once it has finished; a TeacherError naming it when ``deadline`` (monotonic) passes first."""
        while True:
            batch = await self.status(batch_id)
            if batch.get("status") in FINISHED:
                return batch
            if time.monotonic() + poll_s > deadline:
                counts = batch.get("request_counts") or {}
                raise TeacherError(
                    f"teacher {self.teacher_id!r}: batch {batch_id} is still {batch.get('status')} "
                    f"({counts.get('completed', 0)} of {counts.get('total', '?')} requests answered)",
                    hint="run the same command again later: the batch id is in the ledger and is polled, not paid "
                    "for again (teachers[].batch_wait_s sets how long one run waits)",
                )
            await asyncio.sleep(poll_s)

    async def answers(self, batch: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """What a finished batch answered, and why the rest was not."""
        answers, errors = {}, [str(e.get("message")) for e in ((batch.get("errors") or {}).get("data") or [])]
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                found, failed = answered_lines(await self.content(batch[key]))
                answers.update(found)
                errors += failed
        if batch.get("status") != "completed" and not errors:
            errors.append(f"the batch {batch.get('status')}")
        return answers, errors


async def run_batch(
    client: BatchClient, bodies: Sequence[dict[str, Any]], journal: BatchJournal, poll_s: float, wait_s: float
) -> list[dict[str, Any]]:
    """The response body of each Chat Completions request in ``bodies``, in order, through the Batch API.

    Batches recorded in ``journal`` for the same request lines are polled and read first; the requests none of
    them answered go into one new batch (recorded before it is polled)."""
    if len(bodies) > BATCH_MAX_REQUESTS:
        raise TeacherError(
            f"teacher {client.teacher_id!r}: {len(bodies):,} requests in one call, over the Batch API's "
            f"{BATCH_MAX_REQUESTS:,} per batch"
        )
    lines = request_lines(bodies)
    key = sha256_text(canonical_json(lines))
    deadline = time.monotonic() + wait_s
    answers: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    last_id = ""
    for batch_id in journal.submitted(key):
        found, errors = await client.answers(await client.wait(batch_id, poll_s, deadline))
        answers.update(found)
        last_id = batch_id
    missing = [line for line in lines if line["custom_id"] not in answers]
    if missing:
        file_id = await client.upload(missing)
        batch = await client.create(file_id)
        last_id = str(batch["id"])
        journal.record(key, last_id, file_id, len(missing))
        found, errors = await client.answers(await client.wait(last_id, poll_s, deadline))
        answers.update(found)
    unanswered = [line for line in lines if line["custom_id"] not in answers]
    if unanswered:
        raise TeacherError(
            f"teacher {client.teacher_id!r}: {len(unanswered)} of {len(lines)} requests got no answer from batch "
            f"{last_id} ({'; '.join(sorted(set(errors))[:3]) or 'no reason given'})",
            hint="run the same command again: the answered requests are kept and only these go into a new batch",
        )
    return [answers[line["custom_id"]] for line in lines]
