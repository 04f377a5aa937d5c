"""How fast this machine trains the spec's student: a few real optimiser steps, timed, and cached.

`distil plan` multiplies the measured seconds per step by the steps a run will take, instead of assuming a
FLOP rate for the device. A step here is what a training step does: the student's forward on a batch of
``train.batch_size`` sequences of the expected length, the loss (over the labels for classify, over every
position's vocabulary for generate), backward and an AdamW step, under ``train.precision``. The first step
warms up and is not timed. The result is cached in ``.distil/cache/throughput.json`` under a key of what it
depends on (student, shape, device, threads, precision, torch version), so a second plan measures nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from distil.files import write_json_atomic
from distil.ledger.store import canonical_json, sha256_text
from distil.train.students import StudentBuild, label_scores

TIMED_STEPS = 3


@dataclass(frozen=True)
class Throughput:
    seconds_per_step: float
    batch: int
    seq: int
    device: str
    threads: int
    steps: int  # timed steps behind the figure
    load_average: float | None = None  # the machine's 1-minute load when measured: a busy machine is slower
    cached: bool = False


def throughput_key(
    student: dict, kind: str, n_labels: int, batch: int, seq: int, device: str, threads: int, train: dict
) -> str:
    """What the measurement depends on (``train``: precision, freeze_embeddings); the same key on the same machine
    reads the cache."""
    machine = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__}
    parts = [student, kind, n_labels, batch, seq, device, threads, train, machine]
    return sha256_text(canonical_json(parts))


def cached_throughput(path: Path, key: str) -> Throughput | None:
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None  # a missing or damaged cache only costs a measurement
    try:
        return Throughput(**{**found, "cached": True}) if isinstance(found, dict) else None
    except TypeError:
        return None


def store_throughput(path: Path, key: str, measured: Throughput) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[key] = {k: v for k, v in asdict(measured).items() if k != "cached"}
    write_json_atomic(path, data, indent=1)


def measure_step_seconds(
    build: StudentBuild,
    kind: str,
    label_token_ids: list[int] | None,
    n_labels: int,
    batch: int,
    seq: int,
    device: str,
    precision: str = "fp32",
    freeze_embeddings: bool = False,
    steps: int = TIMED_STEPS,
    seed: int = 0,
) -> Throughput:
    """Seconds per optimiser step of ``build.model`` on random tokens [batch, seq], after one untimed warm-up step.

    The model is trained in place on noise: pass a copy, or a model about to be discarded."""
    model = build.model.to(device)
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # as the training loop does
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    generator = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (batch, seq), generator=generator).to(device)
    mask = torch.ones_like(ids)
    targets = torch.randint(0, max(n_labels, 1), (batch,), generator=generator).to(device)
    label_rows = torch.tensor(label_token_ids, device=device) if label_token_ids is not None else None
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            if kind == "classify":
                loss = torch.nn.functional.cross_entropy(label_scores(model, ids, mask, label_rows), targets)
            else:
                loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, lazy initialisation
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / steps
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return Throughput(seconds, batch, seq, device, torch.get_num_threads(), steps, load)
