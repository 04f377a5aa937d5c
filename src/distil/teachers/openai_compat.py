"""A teacher behind any OpenAI-compatible Chat Completions endpoint (vLLM, SGLang, TGI, hosted APIs).

Requests go out concurrently (at most ``max_concurrency`` in flight), each with its own timeout, and
are retried with exponential backoff and jitter on 429, 5xx and timeouts, honouring Retry-After.
The client is aiohttp (keep-alive connections, a C HTTP parser). httpx was measured first
(benchmarks/data_api.py): with 64 requests in flight its connection pool checks every pooled connection
on each request, 7-9 ms of CPU per request on the 2-core benchmark machine, so one event loop managed
under 100 requests/s; aiohttp spends about 0.3 ms.
The teacher asks for ``logprobs``/``top_logprobs``; a server that returns none is used text-only.
For classify tasks the top logprobs at the answer token become a label distribution; without
logprobs the answer text is parsed into a one-hot label.

The API key is read from the environment variable the spec names and kept only in the request
header: it is never part of the fingerprint, a record, the ledger or a log line.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distil.errors import TeacherError
from distil.spec.models import Task, TeacherSpec
from distil.teachers.base import (
    Capabilities,
    ClassifyPrompt,
    api_fingerprint,
    build_classify_prompt,
    calibrate,
    one_hot_from_text,
    sha256_json,
)
from distil.teachers.batch_journal import BatchJournal, MemoryJournal
from distil.teachers.prompts import generation_prompt
from distil.teachers.retries import RETRY_STATUS, retry_delay
from distil.teachers.urls import public_source, public_url


def parse_source(source: str) -> tuple[str, str]:
    """``openai:<base url>#<model>`` -> (base url, model)."""
    rest = source.split(":", 1)[1]
    base, _, model = rest.rpartition("#")
    if not base or not model:
        raise TeacherError(
            f"teachers[].source {public_source(source)!r}: expected openai:<base url>#<model>",
            hint="e.g. openai:http://127.0.0.1:8000/v1#my-model",
        )
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise TeacherError(
            f"teachers[].source {public_source(source)!r}: the base URL is not an http(s) URL with a host",
            hint="e.g. openai:http://127.0.0.1:8000/v1#my-model",
        )
    return base.rstrip("/"), model


def proxy_for(url: str) -> str | None:
    """The proxy that HTTP_PROXY / HTTPS_PROXY name for ``url`` unless NO_PROXY exempts it; None for none.

    Looked up once per batch: aiohttp's own ``trust_env`` does it (and reads ~/.netrc) on every request,
    which about doubled the client's CPU time per request."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


@dataclass
class Completion:
    """One answer: its text, and per answer token the top alternatives as {token: logprob} (None when not given)."""

    text: str
    top_logprobs: list[dict[str, float]] | None = None
    token_logprobs: list[float] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # the answer's tokens as the server wrote them, in order


class OpenAICompatTeacher:
    """Chat Completions over HTTP with bounded concurrency and retries."""

    def __init__(
        self,
        teacher_spec: TeacherSpec,
        task: Task,
        shots: Sequence[tuple[str, str]] = (),
        max_retries: int = 5,
        cost_per_call: float = 0.0,
        backoff_s: float = 0.5,
    ):
        self.teacher_id = teacher_spec.id
        self.backoff_s = (
            backoff_s  # first retry waits about this long (doubling, with jitter) unless Retry-After says otherwise
        )
        self.teacher_spec = teacher_spec
        self.task = task
        self.base_url, self.model = parse_source(teacher_spec.source)
        self.public_base_url = public_url(self.base_url)  # what messages and records show: no credentials
        self.max_retries = max_retries
        self.cost_per_call = cost_per_call
        self.fingerprint = api_fingerprint(self.base_url, self.model, dt.date.today().isoformat())
        self.capabilities = Capabilities(
            full_logits=False, topk=teacher_spec.top_logprobs, text=True, hidden_states=False
        )
        self.logprobs_seen: bool | None = None  # what the server actually did, known after the first answer
        self.calls = 0
        self.batch_journal: BatchJournal = MemoryJournal()  # build_teacher gives a project's teacher the ledger's
        self.prompt: ClassifyPrompt | None = build_classify_prompt(task, shots) if task.kind == "classify" else None
        self._content_free: np.ndarray | None = None
        self._api_key = ""
        if teacher_spec.api_key_env:
            self._api_key = os.environ.get(teacher_spec.api_key_env, "")
            if not self._api_key:
                raise TeacherError(
                    f"teachers[].api_key_env: environment variable {teacher_spec.api_key_env} is not set for teacher "
                    f"{self.teacher_id!r}",
                    hint=f"export {teacher_spec.api_key_env}=... (the key is never written to disk by distil)",
                )
            if (
                urllib.parse.urlsplit(self.base_url).username is not None
            ):  # two Authorization headers: the request could not be sent
                raise TeacherError(
                    f"teachers[].source of teacher {self.teacher_id!r}: the URL carries user:password@ and api_key_env "
                    f"{teacher_spec.api_key_env} gives a key too; a request can carry only one",
                    hint="remove user:password@ from the source URL (the key goes in the environment variable), or "
                    "clear api_key_env",
                )

    @property
    def max_in_flight(self) -> int:
        """Requests this teacher keeps in flight; callers hand it at least this many prompts per call."""
        if self.teacher_spec.batch:  # a whole batch is in flight at once: a call of twice this fills one batch
            from distil.teachers.openai_batch import BATCH_MAX_REQUESTS

            return BATCH_MAX_REQUESTS // 2
        return self.teacher_spec.max_concurrency

    # --- provenance ---------------------------------------------------------------------------------

    @property
    def prompt_hash(self) -> str:
        if self.prompt is not None:
            return self.prompt.template_hash
        return sha256_json({"instruction": self.task.instruction})

    @property
    def params(self) -> dict[str, Any]:
        return {
            "method": "label_distribution" if self.task.kind == "classify" else "generate",
            "model": self.model,
            "temperature": 0.0,
            "top_logprobs": self.teacher_spec.top_logprobs,
            "max_tokens": 1
            if self.task.kind == "classify" and self.teacher_spec.top_logprobs
            else self.task.max_new_tokens,
            "calibrate": self.task.calibrate,
        }

    def classify_prompt(self, text: str) -> str:
        if self.prompt is None:
            return generation_prompt(self.task.instruction, text)
        words = ", ".join(w[0] for w in self.prompt.verbalizers)
        return self.prompt.full(text) + f"\n\n(Answer with one word: {words}.)"

    # --- HTTP ---------------------------------------------------------------------------------------

    async def _post(self, session, url: str, payload: bytes, proxy: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with session.post(url, data=payload, **proxy) as response:
                    status, raw = response.status, await response.read()
                    retry_after = response.headers.get("Retry-After")
                if status < 400:
                    data = _well_formed(raw)
                    if data is not None:
                        self.calls += 1
                        return data
                    # a truncated or garbled body is a transient fault (a proxy cut it): ask again
                    last, retry_after = f"HTTP {status} with a malformed body", None
                elif status not in RETRY_STATUS:
                    raise TeacherError(
                        f"teacher {self.teacher_id!r}: {self.public_base_url} answered HTTP {status}: "
                        f"{raw[:200].decode('utf-8', 'replace')}"
                    )
                else:
                    last = f"HTTP {status}"
            except TimeoutError:
                last = f"timed out after {self.teacher_spec.timeout_s:g} s"
            except aiohttp.ClientError as exc:  # refused, reset, or cut short
                last = type(exc).__name__
            if attempt < self.max_retries:
                await asyncio.sleep(retry_delay(attempt, retry_after, base=self.backoff_s))
        raise TeacherError(
            f"teacher {self.teacher_id!r}: {self.public_base_url} failed after {self.max_retries + 1} attempts "
            f"({last})",
            hint="check that the server is up, or lower teachers[].max_concurrency",
        )

    def _session_settings(self, url: str) -> tuple[dict[str, str], dict[str, Any]]:
        """The headers every request carries and the proxy arguments for ``url``."""
        import aiohttp
        from yarl import URL

        proxy: dict[str, Any] = {}
        if proxy_url := proxy_for(url):
            proxy["proxy"] = proxy_url
            if credentials := aiohttp.BasicAuth.from_url(URL(proxy_url)):  # user:password@ in the proxy's URL
                proxy["proxy_headers"] = {"Proxy-Authorization": credentials.encode()}
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers, proxy

    def _request_body(
        self, prompt: str, max_tokens: int, temperature: float, logprobs: bool, seed: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if seed is not None:
            body["seed"] = seed
        if logprobs and self.teacher_spec.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.teacher_spec.top_logprobs
        return body

    async def _complete_all(self, bodies: Sequence[dict[str, Any]]) -> list[Completion]:
        import aiohttp

        limit = self.teacher_spec.max_concurrency
        gate = asyncio.Semaphore(limit)
        url = f"{self.base_url}/chat/completions"
        headers, proxy = self._session_settings(url)
        failed: list[BaseException] = []  # once one request fails for good, no waiting request is sent

        async def one(session, body: dict[str, Any]) -> Completion:
            payload = json.dumps(body).encode()
            async with gate:
                if failed:
                    raise failed[0]
                try:
                    data = await self._post(session, url, payload, proxy)
                except Exception as exc:
                    failed.append(exc)
                    raise
            return _completion(data)

        # one connection per request in flight, kept alive across requests; the timeout is per request
        connector = aiohttp.TCPConnector(limit=limit)
        timeout = aiohttp.ClientTimeout(total=self.teacher_spec.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            return list(await asyncio.gather(*(one(session, b) for b in bodies)))

    async def _complete_batch(self, bodies: Sequence[dict[str, Any]]) -> list[Completion]:
        """The same requests through the Batch API (:mod:`distil.teachers.openai_batch`)."""
        import aiohttp

        from distil.teachers.openai_batch import BatchClient, run_batch

        headers, proxy = self._session_settings(f"{self.base_url}/batches")
        headers.pop("Content-Type")  # the upload is multipart; aiohttp sets each request's own type
        timeout = aiohttp.ClientTimeout(total=self.teacher_spec.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            client = BatchClient(
                session, self.base_url, self.public_base_url, self.teacher_id, proxy, self.max_retries, self.backoff_s
            )
            spec = self.teacher_spec
            answers = await run_batch(client, bodies, self.batch_journal, spec.batch_poll_s, spec.batch_wait_s)
        self.calls += len(answers)
        return [_completion(a) for a in answers]

    def complete(
        self,
        prompts: Sequence[str],
        max_tokens: int = 48,
        temperature: float = 0.0,
        logprobs: bool = True,
        seed: int | None = None,
    ) -> list[Completion]:
        """Send every prompt (concurrently) and return the answers in order."""
        if not prompts:
            return []
        bodies = [self._request_body(p, max_tokens, temperature, logprobs, seed) for p in prompts]
        send = self._complete_batch if self.teacher_spec.batch else self._complete_all
        results = _run(send(bodies))
        if any(r.top_logprobs for r in results):
            self.logprobs_seen = True
        elif self.logprobs_seen is None and logprobs:
            self.logprobs_seen = False
        return results

    # --- the teacher protocol -----------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        **_: Any,
    ) -> list[str]:
        return [
            c.text
            for c in self.complete(
                prompts,
                max_tokens=max_new_tokens or self.task.max_new_tokens,
                temperature=temperature,
                logprobs=False,
                seed=seed,
            )
        ]

    def generate_detailed(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int = 0,
        topk: int = 0,
        **_: Any,
    ) -> list[dict[str, Any]]:
        """Text per prompt; when the server gives logprobs, also per answer token ``topk_tokens`` (the token it
        wrote, then the other top alternatives, as text) and ``topk_logprobs`` beside them (see
        :func:`written_first`)."""
        out = []
        for c in self.complete(
            prompts,
            max_tokens=max_new_tokens or self.task.max_new_tokens,
            temperature=temperature,
            logprobs=bool(topk),
            seed=seed,
        ):
            item: dict[str, Any] = {"text": c.text.strip()}
            if c.top_logprobs:
                item["topk_tokens"], item["topk_logprobs"] = written_first(c)
                item["confidence"] = float(np.mean(np.exp(c.token_logprobs))) if c.token_logprobs else None
            out.append(item)
        return out

    def _distributions(self, texts: Sequence[str]) -> np.ndarray:
        assert self.prompt is not None
        want = bool(self.teacher_spec.top_logprobs)
        answers = self.complete([self.classify_prompt(t) for t in texts], max_tokens=1 if want else 8, logprobs=want)
        verbalizers = self.prompt.verbalizers
        out = np.zeros((len(texts), len(verbalizers)))
        for i, answer in enumerate(answers):
            dist = _distribution_from_top_logprobs(answer.top_logprobs[0], verbalizers) if answer.top_logprobs else None
            if dist is None:
                dist = one_hot_from_text(answer.text, verbalizers)
            # no label word in the answer at all: uniform, which any confidence filter then drops
            out[i] = dist if dist is not None else np.full(len(verbalizers), 1.0 / len(verbalizers))
        return out

    def label_distribution(self, inputs: Sequence[str]) -> np.ndarray:
        """Label probabilities [n, L] in spec order (one-hot when the server gives no logprobs)."""
        if self.prompt is None:
            raise TeacherError(f"teacher {self.teacher_id!r}: label_distribution needs a classify task")
        probs = self._distributions(inputs)
        if self.task.calibrate and self.logprobs_seen and len(inputs):
            if self._content_free is None:
                self._content_free = self._distributions(list(self.task.content_free_inputs) or ["N/A"]).mean(axis=0)
            # a one-hot or absent content-free answer carries no calibration signal; smooth it
            probs = calibrate(probs, 0.9 * self._content_free + 0.1 / probs.shape[1])
        return probs


def _well_formed(raw: bytes) -> dict[str, Any] | None:
    """The JSON body when it holds ``choices[0].message``; None for a truncated or malformed one."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        if not isinstance(choice["message"], dict):
            return None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return data


def _completion(data: dict[str, Any]) -> Completion:
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError):
        raise TeacherError(f"teacher answered without choices[0].message: {str(data)[:200]}") from None
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return Completion(text)
    tops = [
        {alt["token"]: float(alt["logprob"]) for alt in (tok.get("top_logprobs") or [])}
        or {tok["token"]: float(tok["logprob"])}
        for tok in content
    ]
    return Completion(text, tops, [float(tok["logprob"]) for tok in content], [str(tok["token"]) for tok in content])


def written_first(completion: Completion) -> tuple[list[list[str]], list[list[float]]]:
    """Per answer token, the token the server wrote and then its other top alternatives (most likely first), with
    their log-probabilities: row[0] is always the written token, as a local teacher's greedy row is, so the rows
    say both what was written and what else the teacher would have written."""
    tokens, logprobs = [], []
    for written, logprob, top in zip(
        completion.tokens, completion.token_logprobs, completion.top_logprobs or [], strict=False
    ):
        # k rows in all: a sampled token outside the top list pushes out the least likely alternative
        others = sorted(((t, lp) for t, lp in top.items() if t != written), key=lambda kv: -kv[1])[: len(top) - 1]
        tokens.append([written] + [t for t, _ in others])
        logprobs.append([logprob] + [lp for _, lp in others])
    return tokens, logprobs


def _distribution_from_top_logprobs(top: dict[str, float], verbalizers: Sequence[Sequence[str]]) -> np.ndarray | None:
    """Label distribution from the answer token's top alternatives: a token counts for a label when it is
    a non-empty prefix of one of the label's words (case and spaces ignored). None when none match."""
    mass = np.zeros(len(verbalizers))
    for token, logprob in top.items():
        piece = token.strip().lower()
        if not piece:
            continue
        for index, words in enumerate(verbalizers):
            if any(w.lower().startswith(piece) for w in words):
                mass[index] += math.exp(logprob)
                break
    total = mass.sum()
    return mass / total if total > 0 else None


def _run(coro):
    """Run a coroutine from sync code, also when an event loop is already running in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
