"""Small MLPs on tabular data for the paper benchmarks, trained with distil's own losses.

The loop is a dozen lines of Adam over mini-batches; every loss value in it comes from
``distil.train.losses`` (cross_entropy, forward_kl with a temperature, mixed_loss), so a benchmark
that uses it measures distil's losses, not a re-implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from distil.train import losses as L


def mlp(n_in: int, hidden: list[int], n_out: int, dropout: float = 0.0, input_dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Dropout(input_dropout)] if input_dropout else []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Targets:
    """What a student learns from. x: [N, D]; labels: [N] int with -100 where unlabelled;
    teacher_logits: [N, C] (logits or log-probabilities) or None for hard labels only."""

    x: Tensor
    labels: Tensor
    teacher_logits: Tensor | None = None


def step_loss(
    logits: Tensor, labels: Tensor, teacher_logits: Tensor | None, temperature: float, alpha: float
) -> Tensor:
    """α·CE(labels) + (1-α)·KL_T(teacher || student), or CE alone without a teacher.

    Rows without a label (-100) count only in the KD term; with α = 0 the labels are not used at all.
    """
    ce = L.cross_entropy(logits, labels) if (labels != -100).any() else logits.sum() * 0.0
    if teacher_logits is None:
        return ce
    kd = L.forward_kl(logits, teacher_logits, temperature=temperature)
    return L.mixed_loss(ce, kd, alpha)


def train(
    model: nn.Module,
    data: Targets,
    *,
    epochs: int,
    seed: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    temperature: float = 1.0,
    alpha: float = 0.0,
    input_noise: float = 0.0,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> nn.Module:
    """Adam over shuffled mini-batches for a fixed number of epochs; returns the model in eval mode.

    ``augment(x [B, D], generator) -> [B, D]`` transforms each batch afresh (e.g. jittered images); it is
    only for models trained on hard labels, since soft targets belong to the inputs they were computed on.
    """
    if augment is not None and data.teacher_logits is not None:
        raise ValueError(
            "augment applies to hard-label training only; the teacher's targets are for the unaugmented inputs"
        )
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(data.x)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            x = data.x[rows]
            if input_noise:
                x = x + input_noise * torch.randn(x.shape, generator=g)
            if augment is not None:
                x = augment(x, g)
            teacher = data.teacher_logits[rows] if data.teacher_logits is not None else None
            loss = step_loss(model(x), data.labels[rows], teacher, temperature, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    return model.eval()(x)


def errors(logits: Tensor, y: np.ndarray | Tensor) -> int:
    y = torch.as_tensor(y)
    return int((logits.argmax(-1) != y).sum())


def mean_std(values: list[float], digits: int = 1) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"
