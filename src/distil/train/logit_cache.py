"""The offline teacher cache: the teacher's top-k log-probabilities for every training answer token.

Built once per (teacher, dataset, k, tokenisation) with the teacher in memory, then training runs with
the teacher unloaded and every epoch reads the cache instead of running the teacher. Kept in
``.distil/cache/topk/<key>/``: ``rows.npy`` uint8 [T, row_bytes] (format 2: each token's top-k ids, exact, and
its log-probabilities and tail mass, quantised; :mod:`distil.train.compact_topk`, 100 bytes at k = 50 on a
49k vocabulary), ``offsets.npy`` int64 [n + 1] (example i owns rows offsets[i]:offsets[i+1]) and ``index.json``
(format, k, vocabulary, sizes, and the KL of the quantised rows from the exact ones, measured when it was
built). The rows stay memory-mapped; an example's rows are decoded when a batch needs them. A cache written
before format 2 (``ids.npy`` int32 and ``logprobs.npy`` float16 [T, k], 6 bytes per entry) is still read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from distil.errors import TrainError
from distil.files import replace_dir_atomic, write_json_atomic
from distil.teachers.loading import load_causal_lm, local_model_folder
from distil.teachers.prompts import generation_prompt_ids
from distil.train.batches import GenerateExamples, generate_batch
from distil.train.compact_topk import RowLayout, compression_kl, decode_rows, encode_rows
from distil.train.heads import base_and_head, output_logits
from distil.train.vocab import require_same_vocabulary

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.io import Project

FORMAT = 2  # index.json "format"; absent: the first format, int32 ids + float16 log-probabilities
FIRST_FORMAT_BYTES_PER_ENTRY = 4 + 2


def bytes_per_token(k: int, vocab: int) -> int:
    """What one answer token costs in a cache written now, for top-``k`` over ``vocab`` ids."""
    return RowLayout(min(k, vocab), vocab).row_bytes


@dataclass
class TopkCache:
    """An opened cache: its rows memory-mapped, decoded per example by :meth:`example`."""

    folder: Path
    index: dict[str, Any]
    offsets: np.ndarray  # [n + 1] int64
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # memory-mapped: rows (format 2), or ids + logprobs

    @property
    def format(self) -> int:
        return int(self.index.get("format", 1))

    @property
    def k(self) -> int:
        return int(self.index["k"])

    @property
    def tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def bytes_per_token(self) -> int:
        if self.format == 1:
            return self.k * FIRST_FORMAT_BYTES_PER_ENTRY
        return int(self.arrays["rows"].shape[1])

    def rows(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens start..end-1: (ids [n, k] int32, log-probabilities [n, k] float32), most likely first."""
        if self.format == 1:
            return np.asarray(self.arrays["ids"][start:end]), self.arrays["logprobs"][start:end].astype(np.float32)
        return decode_rows(self.arrays["rows"][start:end], RowLayout(self.k, int(self.index["vocab"])))

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Example i's answer tokens' top-k: (ids [n_i, k], log-probabilities [n_i, k])."""
        return self.rows(int(self.offsets[i]), int(self.offsets[i + 1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def open(cls, folder: Path) -> TopkCache:
        index = json_file(folder / "index.json")
        if int(index.get("format", 1)) > FORMAT:
            raise TrainError(
                f"{folder}: teacher cache format {index['format']} is newer than this distil reads ({FORMAT})",
                hint="upgrade distil, or delete the folder so the cache is rebuilt",
            )
        names = ("rows",) if int(index.get("format", 1)) == FORMAT else ("ids", "logprobs")
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
        if "k" not in index:
            index["k"] = int(arrays["ids"].shape[1])
        return cls(folder, index, np.load(folder / "offsets.npy"), arrays)


def json_file(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def cache_key(fingerprint: str, examples: GenerateExamples, k: int) -> str:
    """Names the cache by what changes its content: the teacher's weights, k and the exact token ids
    (the teacher's prompt and the answer)."""
    h = hashlib.sha256(f"{fingerprint}|{k}".encode())
    for prompt, answer in zip(examples.prompt_ids, examples.answer_ids, strict=True):
        h.update(
            np.asarray(prompt, dtype=np.int64).tobytes() + b"|" + np.asarray(answer, dtype=np.int64).tobytes() + b";"
        )
    return h.hexdigest()[:16]


@torch.no_grad()
def teacher_topk(
    model: PreTrainedModel,
    examples: GenerateExamples,
    k: int,
    batch_size: int = 8,
    chunk_size: int = 1024,
    progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score every answer token with ``model``: (ids [T, k] int32, logprobs [T, k] float32, offsets [n+1]).

    The head runs on answer positions only, chunk by chunk, so [batch, seq, vocab] never exists. The batches go
    to the model's device; what is kept comes back to the CPU.
    """
    decoder, _ = base_and_head(model)
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None) or 0
    all_ids, all_logprobs = [], []
    n = len(examples.answer_ids)
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        batch = generate_batch(examples, rows, pad, with_topk=False)
        hidden = decoder(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).last_hidden_state
        selected = hidden[(batch["targets"] != -100).to(device)]
        for a in range(0, len(selected), chunk_size):
            logprobs = torch.log_softmax(output_logits(model, selected[a : a + chunk_size]).float(), -1)
            top = logprobs.topk(k, dim=-1)
            all_ids.append(top.indices.to(torch.int32).cpu().numpy())
            all_logprobs.append(top.values.cpu().numpy())
        if progress is not None:
            progress(len(rows))
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in examples.answer_ids])]).astype(np.int64)
    return np.concatenate(all_ids), np.concatenate(all_logprobs), offsets


def build_topk_cache(
    model: PreTrainedModel,
    fingerprint: str,
    examples: GenerateExamples,
    k: int,
    root: Path,
    console: Console | None = None,
) -> TopkCache:
    """Build (or reuse) the cache for ``examples`` under ``root``; written atomically."""
    folder = root / cache_key(fingerprint, examples, k)
    if (folder / "index.json").is_file():
        return TopkCache.open(folder)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    if k > vocab:
        raise TrainError(f"train.distillation.topk_cache_k {k} is larger than the teacher's vocabulary ({vocab})")
    ids, logprobs, offsets = teacher_topk(model, examples, k)
    layout = RowLayout(k, vocab)
    rows = encode_rows(ids, logprobs, layout)
    kl = compression_kl(ids, logprobs, *decode_rows(rows, layout)) if len(rows) else np.zeros(0)

    def write(tmp: Path) -> None:
        np.save(tmp / "rows.npy", rows)
        np.save(tmp / "offsets.npy", offsets)
        write_json_atomic(
            tmp / "index.json",
            {
                "format": FORMAT,
                "fingerprint": fingerprint,
                "k": k,
                "vocab": vocab,
                "tokens": int(len(rows)),
                "examples": len(offsets) - 1,
                "bytes_per_token": layout.row_bytes,
                "bytes": int(rows.nbytes),
                "kl_mean": float(kl.mean()) if len(kl) else 0.0,
                "kl_max": float(kl.max()) if len(kl) else 0.0,
            },
        )

    replace_dir_atomic(folder, write)
    if console is not None:
        index = json_file(folder / "index.json")
        console.print(
            f"teacher cache: {len(rows):,} tokens × top-{k} = {rows.nbytes:,} bytes ({layout.row_bytes} bytes per "
            f"token; KL from the exact top-k: mean {index['kl_mean']:.1e}, max {index['kl_max']:.1e})"
        )
    return TopkCache.open(folder)


def teacher_prompt_ids(tokenizer: PreTrainedTokenizerBase, instruction: str, inputs: list[str]) -> list[list[int]]:
    """The local teacher's own prompt for each input of a generate task, tokenised as it sends it: the
    instruction with ``{input}`` filled in (the bare input when it has no slot), in the chat template
    when the tokenizer has one. The cache and on-policy scoring put the answer tokens after this prompt,
    so the teacher judges them in the context it wrote them in, not after the student's bare prompt."""
    return [generation_prompt_ids(tokenizer, instruction, text) for text in inputs]


def teacher_view(examples: GenerateExamples) -> GenerateExamples:
    """The examples as the teacher sees them: its own prompts, the same answer ids."""
    if not examples.teacher_prompt_ids:
        raise TrainError("the teacher's prompts were not attached to the training examples")
    return GenerateExamples(list(examples.teacher_prompt_ids), examples.answer_ids)


def build_or_load_cache(
    project: Project,
    source: str,
    examples: GenerateExamples,
    k: int,
    student_tokenizer: PreTrainedTokenizerBase,
    console: Console | None = None,
    device: torch.device | str = "cpu",
) -> TopkCache | None:
    """The project's cache for a local teacher (loaded only when the cache is missing, onto ``device``); the
    teacher scores every answer token after its own prompt (``examples.teacher_prompt_ids``, attached here)."""
    # transformers is slow to import; only a run that builds the cache pays for it
    from transformers import AutoTokenizer

    teacher_tokenizer = AutoTokenizer.from_pretrained(str(local_model_folder(source)[0]))
    require_same_vocabulary(teacher_tokenizer, student_tokenizer, what="token-level KD from the offline cache")
    if not examples.teacher_prompt_ids:
        examples.teacher_prompt_ids = teacher_prompt_ids(
            teacher_tokenizer, project.spec.task.instruction, examples.inputs
        )
    return cached_topk(project, source, teacher_view(examples), k, console, device)


def cached_topk(
    project: Project,
    source: str,
    view: GenerateExamples,
    k: int,
    console: Console | None = None,
    device: torch.device | str = "cpu",
) -> TopkCache:
    """The local teacher's top-k for every answer token of ``view`` (its own prompts and tokens), from the
    project's cache; the teacher is loaded only when the cache is missing, onto ``device`` (the training device,
    so a GPU run scores on the GPU), and unloaded once it is written."""
    _, fingerprint = local_model_folder(source)
    root = project.state_dir / "cache" / "topk"
    existing = root / cache_key(fingerprint, view, k)
    if (existing / "index.json").is_file():
        return TopkCache.open(existing)
    model, _, fingerprint = load_causal_lm(source)
    cache = build_topk_cache(model.to(device), fingerprint, view, k, root, console)
    del model
    return cache
