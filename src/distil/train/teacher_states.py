"""The local teacher's hidden states at the answer position of every classify example, for feature- and
relation-based KD (``train.features.weight``, ``train.features.relation_weight``).

The teacher reads the same bare prompt the student reads (``CLASSIFY_TEMPLATE``, same tokenizer), so its
states and the student's line up position for position; the state at the last prompt token is the one
the label is read from. Computed once per (teacher weights, prompts, layers) with the teacher in memory,
kept in ``.distil/cache/states/<key>.npy`` (float16 [n, layers, H]); training then runs without it.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING

import numpy as np
import torch

from distil.errors import TrainError
from distil.files import write_bytes_atomic
from distil.teachers.loading import load_causal_lm, local_model_folder
from distil.train.heads import base_and_head
from distil.train.students import encode_prompts
from distil.train.vocab import require_same_vocabulary

if TYPE_CHECKING:
    from rich.console import Console
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.io import Project


def check_layers(mapping: dict[int, int], student_layers: int, teacher_layers: int) -> None:
    """Hidden-state indices run 0 (embeddings) … layers (the last, normalised); negatives count from the end."""
    for s_index, t_index in mapping.items():
        for index, layers, who in ((s_index, student_layers, "student"), (t_index, teacher_layers, "teacher")):
            if not -(layers + 1) <= index <= layers:
                raise TrainError(
                    f"train.features.layers: {s_index}: {t_index}: the {who} has hidden states 0…{layers}",
                    hint="map student indices to teacher indices in those ranges (-1 is the last)",
                )


def answer_states(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: list[int]
) -> torch.Tensor:
    """Hidden states of ``layers`` at each row's last real position (right padding): [B, len(layers), H].
    Differentiable (the student's side); wrap the teacher's call in ``torch.no_grad``."""
    decoder, _ = base_and_head(model)
    states = decoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    last = attention_mask.sum(-1).clamp_min(1) - 1
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    return torch.stack([states[i][rows, last] for i in layers], dim=1)


def states_key(fingerprint: str, prompts: list[str], layers: list[int], max_length: int) -> str:
    h = hashlib.sha256(f"{fingerprint}|{layers}|{max_length}".encode())
    for prompt in prompts:
        h.update(prompt.encode() + b"\0")
    return h.hexdigest()[:16]


def teacher_answer_states(
    project: Project,
    source: str,
    prompts: list[str],
    layers: list[int],
    student_tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    batch_size: int = 16,
    console: Console | None = None,
) -> torch.Tensor:
    """float32 [n, len(layers), H_teacher], from the cache or computed with the teacher loaded once."""
    _, fingerprint = local_model_folder(source)
    path = project.state_dir / "cache" / "states" / f"{states_key(fingerprint, prompts, layers, max_length)}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path).astype(np.float32))
    model, tokenizer, _ = load_causal_lm(source)
    require_same_vocabulary(tokenizer, student_tokenizer, what="feature- and relation-based KD")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for start in range(0, len(prompts), batch_size):
        enc = encode_prompts(tokenizer, prompts[start : start + batch_size], max_length)
        with torch.no_grad():
            out.append(answer_states(model, enc["input_ids"], enc["attention_mask"], layers).float())
    states = torch.cat(out).numpy().astype(np.float16)
    buffer = io.BytesIO()
    np.save(buffer, states)
    write_bytes_atomic(path, buffer.getvalue())
    if console is not None:
        console.print(
            f"teacher states: {states.shape[0]:,} examples × {len(layers)} layer(s) × {states.shape[2]} "
            f"({states.nbytes:,} bytes)"
        )
    del model
    return torch.from_numpy(states.astype(np.float32))
