"""The training loop: optimiser, schedule, gradient accumulation, processes, checkpoints, validation checks.

It knows nothing of distillation. An :class:`Objective` says how many rows there are, turns the rows of
a step into micro-batches, counts their loss items and computes each micro-batch's loss; the loop does
the rest. It runs unchanged under ``accelerate launch`` (DDP): every process sees the same shuffled
order and takes its own share of each optimiser step, and the loss items are counted over the whole
step across processes before the first micro-batch, so the gradient is the same whatever the split.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor

from distil.console import PlainProgress, progress
from distil.tracking import Tracker, curve_metrics
from distil.train.artefacts import STATE_FILE, load_checkpoint, save_checkpoint
from distil.train.heads import decoder_of

if TYPE_CHECKING:
    from accelerate import Accelerator
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from transformers import PreTrainedModel

    from distil.spec.models import TrainSpec


@dataclass
class StepBatches:
    """One process's micro-batches of an optimiser step (None where it has no rows), and notes for the curve."""

    batches: list[dict[str, Tensor] | None]
    notes: dict[str, Any] = field(default_factory=dict)


class Objective(Protocol):
    """What one training minimises (see :mod:`distil.train.objectives`)."""

    role: str

    @property
    def rows(self) -> int: ...

    def prepare_model(self, model: PreTrainedModel) -> None: ...

    def to(self, device: torch.device) -> None: ...

    def step_batches(
        self, model: PreTrainedModel, micro: list[list[int]], step_rows: list[int], step: int, rank: int
    ) -> StepBatches: ...

    def items(self, batch: dict[str, Tensor]) -> int: ...

    def loss(self, model: PreTrainedModel, batch: dict[str, Tensor], num_items: float) -> tuple[Tensor, int]: ...

    def validation_fidelity(self, model: PreTrainedModel, device: torch.device) -> float | None: ...


@dataclass
class FitState:
    """Where a training stands; saved as ``progress.json`` next to each checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -1.0
    bad_evals: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    stopped_early: bool = False
    tokens: int = 0
    seconds: float = 0.0

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> FitState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    @property
    def best_fidelity(self) -> float | None:
        return self.best if self.best >= 0 else None


@dataclass
class FitResult:
    state: FitState
    model: PreTrainedModel | None  # the finished model with the kept weights; None while the training is paused


@dataclass
class _Fit:
    """Everything one optimiser step needs."""

    model: torch.nn.Module
    objective: Objective
    cfg: TrainSpec
    accelerator: Accelerator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[torch.nn.Parameter]
    autocast: Callable[[], contextlib.AbstractContextManager]
    steps_per_epoch: int
    best_state: dict[str, Tensor] | None = None
    tracker: Tracker | None = None  # where each curve point is also logged (train.report_to); main process only


# --- small pieces ------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero, as a LambdaLR factor of the step."""
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def step_rows(
    order: list[int], step: int, per_step: int, batch: int, accum: int, world: int, rank: int
) -> list[list[int]]:
    """This process's micro-batches of optimiser step ``step``: rows of ``order``, split evenly."""
    rows = order[step * per_step : (step + 1) * per_step]
    micro = []
    for m in range(accum):
        group = rows[m * batch * world : (m + 1) * batch * world]
        micro.append(group[rank::world])
    return micro


def with_kept_weights(model: PreTrainedModel, best_state: dict[str, Tensor] | None, cfg: TrainSpec) -> PreTrainedModel:
    """The finished model with the weights ``train.keep`` asks for: the best validation check's, or its own last
    ones."""
    if best_state is not None and cfg.keep == "best":
        model.load_state_dict(best_state)
    return model


def prepared_model(model: PreTrainedModel, objective: Objective, cfg: TrainSpec) -> PreTrainedModel:
    """A fresh copy of ``model`` with the objective's modules, compiled and frozen as asked, in training mode."""
    model = copy.deepcopy(model)
    objective.prepare_model(model)
    if cfg.compile:
        decoder_of(model).compile(dynamic=True, backend=os.environ.get("DISTIL_COMPILE_BACKEND", "inductor"))
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # a tied head shares this tensor
    model.train()
    return model


def progress_bar(role: str, console: Console | None, enabled: bool) -> Progress | PlainProgress:
    """A bar in a terminal; a plain line every few seconds in a log (see :func:`distil.console.progress`)."""
    # rich's progress pulls in a lot; only training shows it
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn

    return progress(
        TextColumn(f"[bold]{role}[/bold]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TextColumn("fidelity {task.fields[fid]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        unit="steps",
        detail="loss {loss:.4f}, {tps:,.0f} tok/s, fidelity {fid}",
    )


# --- one optimiser step --------------------------------------------------------------------------------------


def _micro_loss(run: _Fit, batch: dict[str, Tensor] | None, num_items: float) -> tuple[Tensor, int]:
    if batch is None:  # a short last step can leave a process without rows; it still joins the all-reduce
        return sum(p.sum() * 0.0 for p in run.params), 0
    batch = {k: v.to(run.accelerator.device) for k, v in batch.items()}
    with run.autocast():
        return run.objective.loss(run.model, batch, num_items)


def _reduce_sum(run: _Fit, value: float) -> float:
    return float(run.accelerator.reduce(torch.tensor(value, device=run.accelerator.device), "sum"))


def optimiser_step(run: _Fit, order: list[int], step: int, state: FitState) -> dict[str, Any]:
    """Accumulate the micro-batches of ``step`` of the epoch's ``order``, step the optimiser; the curve point."""
    started = time.perf_counter()
    cfg, accelerator = run.cfg, run.accelerator
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = cfg.batch_size * cfg.grad_accum * world
    micro = step_rows(order, step, per_step, cfg.batch_size, cfg.grad_accum, world, rank)
    planned = run.objective.step_batches(
        accelerator.unwrap_model(run.model),
        micro,
        order[step * per_step : (step + 1) * per_step],
        state.global_step,
        rank,
    )
    num_items = max(1.0, _reduce_sum(run, float(sum(run.objective.items(b) for b in planned.batches if b is not None))))
    step_loss, step_tokens = 0.0, 0
    for m, batch in enumerate(planned.batches):
        sync = contextlib.nullcontext() if m == len(planned.batches) - 1 else accelerator.no_sync(run.model)
        with sync:
            loss, tokens = _micro_loss(run, batch, num_items)
            accelerator.backward(
                loss * world
            )  # DDP averages gradients over processes; the loss is already a share of the global sum
        step_loss += float(loss.detach())
        step_tokens += tokens
    accelerator.clip_grad_norm_(run.params, 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - started
    step_loss = _reduce_sum(run, step_loss)
    state.tokens += int(_reduce_sum(run, float(step_tokens)))
    state.seconds += elapsed
    state.global_step += 1
    state.step_in_epoch = step + 1
    return {
        "step": state.global_step,
        "epoch": state.epoch,
        "loss": step_loss,
        "lr": run.scheduler.get_last_lr()[0],
        **planned.notes,
    }


def validation_check(run: _Fit, state: FitState, point: dict[str, Any]) -> bool:
    """Score the validation split, keep the best weights; True when patience has run out."""
    run.model.eval()
    fidelity = run.objective.validation_fidelity(run.model, run.accelerator.device)
    run.model.train()
    point["validation_fidelity"] = fidelity
    if fidelity is None:
        return False
    if fidelity > state.best:
        state.best, state.bad_evals = fidelity, 0
        run.best_state = {
            k: v.detach().cpu().clone() for k, v in run.accelerator.unwrap_model(run.model).state_dict().items()
        }
        return False
    state.bad_evals += 1
    return run.cfg.patience > 0 and state.bad_evals >= run.cfg.patience


def _epoch_steps(run: _Fit, state: FitState) -> Iterator[tuple[list[int], int]]:
    """(the epoch's shuffled order, step) from where ``state`` stands to the last epoch; advances the epoch."""
    n = run.objective.rows
    while state.epoch < run.cfg.epochs:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(run.cfg.seed * 1000 + state.epoch)).tolist()
        for step in range(state.step_in_epoch, run.steps_per_epoch):
            yield order, step
        state.epoch, state.step_in_epoch = state.epoch + 1, 0


def run_steps(
    run: _Fit, state: FitState, max_steps: int | None, progress: Progress | PlainProgress, bar: TaskID | int
) -> bool:
    """Optimiser steps until the epochs are done, patience runs out (True) or ``max_steps`` were taken."""
    eval_every = run.cfg.eval_every or run.steps_per_epoch
    steps_run = 0
    for order, step in _epoch_steps(run, state):
        point = optimiser_step(run, order, step, state)
        stop = False
        if state.global_step % eval_every == 0 or step == run.steps_per_epoch - 1:
            stop = validation_check(run, state, point)
        state.curve.append(point)
        if run.tracker is not None:
            run.tracker.log_metrics(curve_metrics(run.objective.role, point), step=point["step"])
        progress.update(
            bar,
            advance=1,
            loss=point["loss"],
            tps=state.tokens / max(state.seconds, 1e-9),
            fid=f"{point.get('validation_fidelity', state.best):.3f}" if state.best >= 0 else "-",
        )
        steps_run += 1
        if stop or (max_steps is not None and steps_run >= max_steps):
            if state.step_in_epoch >= run.steps_per_epoch:  # the epoch's last step: the next call starts the next epoch
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
            return stop
    return False


# --- the loop --------------------------------------------------------------------------------------------------


def fit(
    model: PreTrainedModel,
    objective: Objective,
    cfg: TrainSpec,
    checkpoint: Path,
    accelerator: Accelerator,
    console: Console | None = None,
    max_steps: int | None = None,
    tracker: Tracker | None = None,
) -> FitResult:
    """Train a fresh copy of ``model`` on ``objective``, resuming from ``checkpoint`` when one is there.

    ``max_steps`` stops after that many optimiser steps in this call (the checkpoint is kept; call again
    to go on). Returns the state and, once finished, the model with the weights ``train.keep`` asks for.
    ``tracker`` (None on processes other than the main one) receives every curve point as it is made.
    """
    seed_everything(cfg.seed)
    model = prepared_model(model, objective, cfg)
    steps_per_epoch = max(1, math.ceil(objective.rows / (cfg.batch_size * cfg.grad_accum * accelerator.num_processes)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(steps_per_epoch * cfg.epochs, cfg.optimizer.warmup_ratio)
    )
    state, best_state = FitState(), None
    if (checkpoint / STATE_FILE).is_file():
        progress_json, best_state = load_checkpoint(checkpoint, model, optimizer, scheduler)
        state = FitState.from_json(progress_json)
    if state.done:
        # finished before a crash: hand the model back too, so its folder is (re)written if the crash
        # came between the final checkpoint and the model folder
        return FitResult(state, with_kept_weights(model, best_state, cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    objective.to(accelerator.device)
    device_type = accelerator.device.type
    autocast = (
        (lambda: torch.autocast(device_type, dtype=torch.bfloat16))
        if cfg.precision == "bf16"
        else contextlib.nullcontext
    )
    run = _Fit(
        model, objective, cfg, accelerator, optimizer, scheduler, params, autocast, steps_per_epoch, best_state, tracker
    )
    with progress_bar(objective.role, console, accelerator.is_main_process) as progress:
        bar = progress.add_task(
            objective.role, total=steps_per_epoch * cfg.epochs, completed=state.global_step, loss=0.0, tps=0.0, fid="-"
        )
        stop = run_steps(run, state, max_steps, progress, bar)
    state.done = stop or state.epoch >= cfg.epochs
    state.stopped_early = stop
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        save_checkpoint(checkpoint, unwrapped, optimizer, scheduler, asdict(state), run.best_state)
    finished = with_kept_weights(unwrapped, run.best_state, cfg) if state.done else None
    accelerator.wait_for_everyone()
    return FitResult(state, finished)
