"""A local transformers causal LM as a teacher (``hf:`` folders and ``gguf:`` files).

For classify tasks the teacher scores the first token of each label word (with its leading space)
at the answer position of the few-shot prompt, softmaxes over just those tokens, and applies
contextual calibration (the content-free inputs' distributions averaged). The prompt's shared prefix
(instruction, and with ``few_shot.select: first`` the shots, then the tokens every query of the call
starts with) is run once and its KV cache is shared, not copied, by each batch; only the rest of each
query is computed per item, and the vocabulary projection only at its answer position. With
``select: similar`` each query carries its own shots, so every input costs several times more
(docs/benchmarks.md, teacher_prompt).

``task.scoring: channel`` turns the question round (Min et al. 2022): for each label the shots are
written label first ("Category: billing\\nTicket: ..."), and the input's own log-likelihood after
"Category: <label>\\nTicket:" scores the label. The shots and each label's head are run once (one
prefix per label); each input then costs one pass of its own tokens per label.
``both`` multiplies the calibrated direct distribution by the channel one and renormalises.

CPU threads: ``teachers[].threads`` (:mod:`distil.teachers.cpu_threads`), never part of a cache key.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

from distil.errors import TeacherError
from distil.spec.models import Task, TeacherSpec
from distil.teachers.base import (
    Capabilities,
    ClassifyPrompt,
    build_classify_prompt,
    calibrate,
    render_shot,
    sha256_json,
)
from distil.teachers.cpu_threads import ThreadChooser
from distil.teachers.decoding import decode_rows, end_ids
from distil.teachers.prompts import generation_prompt, in_chat_template


def _label_scores(logits_at_answer, token_ids: list[list[int]]) -> np.ndarray:
    """Per-label log-scores from answer-position logits.

    logits_at_answer: float tensor [n, V]; token_ids: per label, the first token of each of its
    words. A label with several words gets the logsumexp of their logits. Returns float64 [n, L],
    softmaxed over the labels only.
    """
    import torch

    logits = logits_at_answer.float()
    scores = torch.stack([torch.logsumexp(logits[:, ids], dim=1) for ids in token_ids], dim=1)
    return torch.softmax(scores.double(), dim=1).cpu().numpy()


@dataclass(frozen=True)
class _Prefix:
    """Tokens run once at batch 1 and kept: their KV cache (None when there are none), how many, and the
    log-probabilities the last one gives the next token (float32 [V]; None when there are none)."""

    cache: Any
    width: int
    next_logprobs: Any


_NO_PREFIX = _Prefix(None, 0, None)
KEPT_EXTENSIONS = 8  # prefixes extended by a call's common query start, kept for the calls that follow


def _common_start(queries: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The tokens every query starts with, leaving each query at least one token of its own (its answer position)."""
    if not queries:
        return ()
    limit = min(len(q) for q in queries) - 1
    first = queries[0]
    n = 0
    while n < limit and all(q[n] == first[n] for q in queries):
        n += 1
    return tuple(first[:n])


def _batch_cache(prefix_cache: Any, rows: int) -> Any:
    """A cache for a batch of ``rows`` after a batch-1 prefix: each layer's keys and values are broadcast views of
    the prefix's, copied only when the batch's own tokens are appended, so the prefix's cache is never written."""
    if not hasattr(prefix_cache, "layers"):  # another cache layout: copy it whole
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        return cache
    cache = copy.copy(prefix_cache)
    cache.layers = []
    for layer in prefix_cache.layers:
        layer = copy.copy(layer)
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            layer.values = layer.values.expand(rows, *layer.values.shape[1:])
        cache.layers.append(layer)
    return cache


@functools.cache
def native_bf16() -> bool:
    """Whether bfloat16 runs natively here: a CUDA GPU, or a CPU whose flags include avx512_bf16 or amx_bf16."""
    import torch

    if torch.cuda.is_available():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class HFLocalTeacher:
    """A causal LM on this machine. ``model``/``tokenizer``/``fingerprint`` may be given (tests, benchmarks)."""

    def __init__(
        self,
        teacher_spec: TeacherSpec,
        task: Task,
        shots: Sequence[tuple[str, str]] = (),
        model: Any = None,
        tokenizer: Any = None,
        fingerprint: str | None = None,
        batch_size: int = 16,
    ):
        if model is None:
            from distil.teachers.loading import load_causal_lm

            model, tokenizer, fingerprint = load_causal_lm(teacher_spec.source)
        self.teacher_id = teacher_spec.id
        self.teacher_spec = teacher_spec
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint or "unknown"
        self.batch_size = batch_size
        self.cost_per_call = 0.0
        chosen = teacher_spec.write_dtype
        self.write_dtype = ("bfloat16" if native_bf16() else "float32") if chosen == "auto" else chosen
        self._writers: dict[str, Any] = {}  # dtype -> a copy of the model in that precision
        self.capabilities = Capabilities(
            full_logits=True, topk=int(model.config.vocab_size), text=True, hidden_states=True, continuation=True
        )
        self.prompt: ClassifyPrompt | None = None
        self._label_token_ids: list[list[int]] = []
        self._prefix_ids: list[int] = []
        self._prefixes: dict[tuple[int, ...], _Prefix] = {}  # the prompt's own prefixes, run once
        self._extended: OrderedDict[tuple[int, ...], _Prefix] = OrderedDict()  # and those extended, the latest few
        self._threads = ThreadChooser(getattr(teacher_spec, "threads", "auto"))
        self._content_free: np.ndarray | None = None
        self._channel_shared_ids: list[int] = []  # the shots written label first, shared by every label
        self._channel_head_ids: list[list[int]] = []  # per label, the template up to the input
        self._channel_lead = self._channel_tail = ""  # what surrounds each input in its scored text
        if task.kind == "classify":
            self.prompt = build_classify_prompt(task, shots)
            self._label_token_ids = self._verbalizer_token_ids()
            self._prefix_ids = list(tokenizer(self.prompt.prefix, add_special_tokens=True).input_ids)
            if task.scoring != "direct":
                head, tail = task.few_shot.channel_template.split("{input}")
                self._channel_lead = " " if head.endswith(" ") else ""
                self._channel_tail = tail + task.few_shot.separator[:1]
                shared, heads = self._channel_prefixes()
                self._channel_shared_ids = list(tokenizer(shared, add_special_tokens=True).input_ids)
                self._channel_head_ids = [
                    list(tokenizer(h, add_special_tokens=not self._channel_shared_ids).input_ids) for h in heads
                ]

    @property
    def max_in_flight(self) -> int:
        """0: a local model answers one batch at a time."""
        return 0

    # --- provenance ---------------------------------------------------------------------------------

    @property
    def prompt_hash(self) -> str:
        if self.prompt is not None:
            return self.prompt.template_hash
        return sha256_json(
            {"instruction": self.task.instruction, "chat_template": getattr(self.tokenizer, "chat_template", None)}
        )

    @property
    def params(self) -> dict[str, Any]:
        if self.task.kind == "classify":
            params: dict[str, Any] = {
                "method": "label_distribution",
                "calibrate": self.task.calibrate,
                "content_free_inputs": list(self.task.content_free_inputs),
                "label_token_ids": self._label_token_ids,
            }
            if self.task.scoring != "direct":  # absent for direct, so caches written before this option stay valid
                params.update(
                    {"scoring": self.task.scoring, "channel_ids": [self._channel_shared_ids, self._channel_head_ids]}
                )
            return params
        return {"method": "generate", "max_new_tokens": self.task.max_new_tokens, "temperature": 0.0}

    def classify_prompt(self, text: str) -> str:
        if self.prompt is None:
            return generation_prompt(self.task.instruction, text)
        return self.prompt.full(text)

    # --- classify -----------------------------------------------------------------------------------

    def _verbalizer_token_ids(self) -> list[list[int]]:
        assert self.prompt is not None
        out: list[list[int]] = []
        owner: dict[int, str] = {}
        for name, words in zip(self.prompt.label_names, self.prompt.verbalizers, strict=True):
            ids = []
            for word in words:
                tokens = self.tokenizer(" " + word.strip(), add_special_tokens=False).input_ids
                if not tokens:
                    raise TeacherError(f"task.labels: the word {word!r} of label {name!r} tokenizes to nothing")
                first = int(tokens[0])
                if owner.get(first, name) != name:
                    raise TeacherError(
                        f"task.labels: labels {owner[first]!r} and {name!r} start with the same token for teacher "
                        f"{self.teacher_id!r}",
                        hint="give the labels verbalizer words (task.labels[].words) that begin differently",
                    )
                owner[first] = name
                if first not in ids:
                    ids.append(first)
            out.append(ids)
        return out

    def _query_ids(self, text: str) -> list[int]:
        assert self.prompt is not None
        return list(self.tokenizer(self.prompt.query(text), add_special_tokens=False).input_ids)

    def _prefix(self, ids: Sequence[int], then: Sequence[int] = ()) -> _Prefix:
        """``ids`` then ``then`` run once at batch 1 and kept: ``ids`` (the prompt's own prefix) for good, each
        extension ``then`` (what a call's queries share) among the latest few, computed after ``ids``' cache."""
        import torch

        base, key = tuple(ids), tuple(ids) + tuple(then)
        kept = self._prefixes if not then else self._extended
        if key in kept:
            if then:
                self._extended.move_to_end(key)
            return kept[key]
        start = self._prefix(base) if then and base else _NO_PREFIX
        new = list(then) if then else list(base)
        if not new:
            return _NO_PREFIX
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([new]),
                past_key_values=None if start.cache is None else _batch_cache(start.cache, 1),
                position_ids=(start.width + torch.arange(len(new))).unsqueeze(0),
                use_cache=True,
                logits_to_keep=1,
            )
        state = _Prefix(out.past_key_values, start.width + len(new), torch.log_softmax(out.logits[0, -1].float(), -1))
        kept[key] = state
        if then and len(self._extended) > KEPT_EXTENSIONS:
            self._extended.popitem(last=False)
        return state

    def _batched_after_prefix(self, prefix: _Prefix, queries: list[list[int]], answer_only: bool):
        """Yield (indices, logits) for ``queries`` run after ``prefix``, batched by similar length and right-padded,
        so real tokens keep positions ``width + j``. ``answer_only``: logits [b, V] at each query's last token,
        else [b, longest, V] at every position. The prefix's cache is shared by the batch, not copied."""
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = prefix.width
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            lengths = torch.tensor([len(queries[i]) for i in chunk])
            longest = int(lengths.max())
            if longest == 0:
                continue
            ids = torch.full((len(chunk), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width + longest), dtype=torch.long)
            mask[:, :width] = 1
            for row, i in enumerate(chunk):
                ids[row, : len(queries[i])] = torch.tensor(queries[i], dtype=torch.long)
                mask[row, width : width + len(queries[i])] = 1
            cache = None if prefix.cache is None else _batch_cache(prefix.cache, len(chunk))
            positions = (width + torch.arange(longest)).unsqueeze(0).expand(len(chunk), -1)
            keep = (lengths - 1).clamp_min(0).unsqueeze(1) if answer_only else 0
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    past_key_values=cache,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=keep,
                ).logits
            yield chunk, logits[:, 0, :] if answer_only else logits

    def raw_label_distribution(self, inputs: Sequence[str], reuse_prefix: bool = True) -> np.ndarray:
        """Uncalibrated label probabilities [n, L]. ``reuse_prefix=False`` scores each input alone, in full."""
        import torch

        if self.prompt is None:
            raise TeacherError(f"teacher {self.teacher_id!r}: label_distribution needs a classify task")
        out = np.zeros((len(inputs), len(self._label_token_ids)))
        if not inputs:
            return out
        queries = [self._query_ids(t) for t in inputs]
        with self._threads.applied():
            if not reuse_prefix:
                with torch.inference_mode():
                    for i, q in enumerate(queries):
                        logits = self.model(input_ids=torch.tensor([self._prefix_ids + q])).logits[:, -1, :]
                        out[i] = _label_scores(logits, self._label_token_ids)[0]
                return out
            shared = _common_start(queries)
            prefix = self._prefix(self._prefix_ids, shared)
            rest = [q[len(shared) :] for q in queries]
            for chunk, answer in self._batched_after_prefix(prefix, rest, answer_only=True):
                out[chunk] = _label_scores(answer, self._label_token_ids)
        return out

    # --- channel scoring ------------------------------------------------------------------------------

    def _channel_prefixes(self) -> tuple[str, list[str]]:
        """(shots, heads): the shots written label first, then per label the template up to the input
        with the label's word, trailing spaces left to the input."""
        assert self.prompt is not None
        fs = self.task.few_shot
        head = fs.channel_template.split("{input}")[0]
        words = dict(zip(self.prompt.label_names, self.prompt.verbalizers, strict=True))
        shots = "".join(
            render_shot(fs.channel_template, text, label, words) + fs.separator for text, label in self.prompt.shots
        )
        return shots, [render_shot(head, "", name, words).rstrip(" ") for name in self.prompt.label_names]

    def _channel_target_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(self._channel_lead + text + self._channel_tail, add_special_tokens=False).input_ids)

    def channel_log_likelihoods(self, inputs: Sequence[str]) -> np.ndarray:
        """log P(input | label) [n, L]: the summed log-probabilities of each input's tokens after each label's head.

        The shots, then each label's head after them, are run once and kept; per label, each input's
        tokens are one row of a batch over that label's prefix. The head's last position predicts the
        input's first token; each input token predicts the next."""
        import torch

        if not self._channel_head_ids:
            raise TeacherError(f"teacher {self.teacher_id!r}: channel scoring needs task.scoring: channel or both")
        out = np.zeros((len(inputs), len(self._channel_head_ids)))
        if not inputs:
            return out
        targets = [self._channel_target_ids(t) for t in inputs]
        with self._threads.applied():
            for label, head in enumerate(self._channel_head_ids):
                prefix = self._prefix(self._channel_shared_ids, head)
                for i, target in enumerate(targets):
                    out[i, label] = float(prefix.next_logprobs[target[0]]) if target else 0.0
                queries = [t[:-1] for t in targets]
                for chunk, logits in self._batched_after_prefix(prefix, queries, answer_only=False):
                    wanted = torch.zeros(logits.shape[:2], dtype=torch.long)
                    counted = torch.zeros(logits.shape[:2], dtype=torch.bool)
                    for row, i in enumerate(chunk):
                        wanted[row, : len(targets[i]) - 1] = torch.tensor(targets[i][1:], dtype=torch.long)
                        counted[row, : len(targets[i]) - 1] = True
                    logits = logits.float()
                    picked = logits.gather(2, wanted.unsqueeze(2)).squeeze(2) - torch.logsumexp(logits, dim=-1)
                    sums = torch.where(counted, picked, 0.0).double().sum(dim=1)
                    for row, i in enumerate(chunk):
                        out[i, label] += float(sums[row])
        return out

    def channel_label_distribution(self, inputs: Sequence[str]) -> np.ndarray:
        """softmax over labels of log P(input | label) [n, L] (uniform label prior)."""
        return softmax(self.channel_log_likelihoods(inputs), axis=1)

    def use_content_free(self, distribution: np.ndarray) -> None:
        """Calibrate with ``distribution`` (stored by an earlier run) instead of computing it."""
        self._content_free = np.asarray(distribution, dtype=np.float64)

    def content_free_distribution(self) -> np.ndarray:
        """Mean uncalibrated distribution over the content-free inputs [L] (computed once)."""
        if self._content_free is None:
            self._content_free = self.raw_label_distribution(list(self.task.content_free_inputs) or ["N/A"]).mean(
                axis=0
            )
        return self._content_free

    def label_distribution(self, inputs: Sequence[str], reuse_prefix: bool = True) -> np.ndarray:
        """Label probabilities [n, L] in spec order, calibrated when task.calibrate is on."""
        if self.task.scoring == "channel":
            return self.channel_label_distribution(inputs)
        probs = self.raw_label_distribution(inputs, reuse_prefix=reuse_prefix)
        if self.task.calibrate and len(inputs):
            probs = calibrate(probs, self.content_free_distribution())
        if self.task.scoring == "both" and len(inputs):  # direct × channel, renormalised, in log space
            probs = softmax(np.log(np.clip(probs, 1e-12, None)) + self.channel_log_likelihoods(inputs), axis=1)
        return probs

    # --- text ---------------------------------------------------------------------------------------

    def _chat_text(self, prompt: str, chat: bool) -> str:
        return in_chat_template(self.tokenizer, prompt, chat)

    def generate_detailed(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        chat: bool = True,
        topk: int = 0,
        stop: str | None = None,
        dtype: str | None = None,
    ) -> list[dict[str, Any]]:
        """Batched generation. Per prompt: text, and with ``topk`` the top-k ids/logprobs per answer token.

        ``chat=False`` continues the prompt as raw text; ``stop`` ends a row once its answer contains
        that string (the text keeps it). A finished row leaves its batch (:func:`decode_rows`), so a
        batch costs about the sum of its rows' lengths. ``dtype`` runs a copy of the model in that
        precision (kept for later calls)."""
        import torch

        tok = self.tokenizer

        def stopped(
            ids: list[int],
        ) -> bool:  # a token is at least one character: the stop string lies in the last len(stop) + 1
            return stop in tok.decode(ids[-len(stop) - 1 :], skip_special_tokens=True)

        texts = [self._chat_text(p, chat) for p in prompts]
        results: list[dict[str, Any]] = []
        side = tok.padding_side
        tok.padding_side = "left"  # generation appends on the right, so pad on the left
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = tok(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=not chat,
                )
                torch.manual_seed(seed + start)
                with self._threads.applied():
                    rows = decode_rows(
                        self._writer(dtype),
                        batch["input_ids"],
                        batch["attention_mask"],
                        max_new_tokens or self.task.max_new_tokens,
                        stopped if stop else None,
                        temperature=temperature,
                        top_p=top_p,
                        topk=topk,
                        ends=end_ids(tok),
                    )
                for row in rows:
                    item: dict[str, Any] = {"text": tok.decode(row.ids, skip_special_tokens=True).strip()}
                    if topk:
                        item["topk_ids"], item["topk_logprobs"] = row.topk_ids, row.topk_logprobs
                        item["confidence"] = float(np.mean(row.chosen_probs)) if row.chosen_probs else 0.0
                    results.append(item)
        finally:
            tok.padding_side = side
        return results

    def _writer(self, dtype: str | None) -> Any:
        import torch

        if dtype is None or getattr(torch, dtype) == self.model.dtype:
            return self.model
        if dtype not in self._writers:
            self._writers[dtype] = copy.deepcopy(self.model).to(getattr(torch, dtype))
        return self._writers[dtype]

    def generate(self, prompts: Sequence[str], **params: Any) -> list[str]:
        """Answer text per prompt (chat template applied; ``temperature`` > 0 samples)."""
        return [r["text"] for r in self.generate_detailed(prompts, **params)]

    def topk_logprobs(self, prompts: Sequence[str], completions: Sequence[str], k: int = 20, chat: bool = True):
        """For each (prompt, completion), the teacher's top-k (ids [T, k], logprobs [T, k]) at every completion
        token."""
        import torch

        out = []
        with torch.inference_mode(), self._threads.applied():
            for prompt, completion in zip(prompts, completions, strict=True):
                head = self.tokenizer(self._chat_text(prompt, chat), add_special_tokens=not chat).input_ids
                tail = self.tokenizer(completion, add_special_tokens=False).input_ids
                logits = self.model(input_ids=torch.tensor([head + tail])).logits[0]
                # the token at position j is predicted by the logits at j - 1
                steps = torch.log_softmax(logits[len(head) - 1 : len(head) + len(tail) - 1].float(), dim=-1)
                top = torch.topk(steps, min(k, steps.shape[-1]), dim=-1)
                out.append((top.indices.numpy(), top.values.numpy()))
        return out

    def hidden_states(self, texts: Sequence[str], layer: int = -1) -> np.ndarray:
        """Mean-pooled hidden states of ``layer`` for each text: float32 [n, H]."""
        import torch

        rows = []
        with torch.inference_mode(), self._threads.applied():
            for text in texts:
                ids = self.tokenizer(text, return_tensors="pt").input_ids
                states = self.model(input_ids=ids, output_hidden_states=True).hidden_states[layer]
                rows.append(states[0].mean(dim=0).float().numpy())
        return np.stack(rows) if rows else np.zeros((0, int(self.model.config.hidden_size)), dtype=np.float32)
