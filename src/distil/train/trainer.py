"""`distil train`: train the distilled student and its hard-label baseline on the newest curated data.

A straight-line recipe: set up (data, student, optimiser), loop (micro-batches, accumulation,
validation fidelity, early stopping, checkpoints), write results (plain transformers folders, metrics,
curve, ledger rows). It runs unchanged under ``accelerate launch`` (DDP): every process sees the same
shuffled order and takes its own share of each optimiser step, and losses are normalised by the token
count of the whole step across processes, so the gradient is the same whatever the split.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distil.errors import TrainError
from distil.train import losses as L
from distil.train.batches import (
    ClassifyExamples,
    GenerateExamples,
    classify_batch,
    classify_examples,
    generate_batch,
    generate_examples,
    latest_curated,
)
from distil.train.onpolicy import (
    left_pad,
    on_policy_loss,
    on_policy_step_uses_student,
    sample_completions,
    step_rng,
    trim_completions,
)
from distil.train.students import (
    CLASSIFY_TEMPLATE,
    GENERATE_TEMPLATE,
    TASK_FILE,
    StudentBuild,
    base_and_head,
    build_student,
    label_logits,
    label_token_ids,
)
from distil.train.teacher_states import answer_states

ROLES = ("student", "baseline")
RATIONALE_TEMPLATE = "{input}\nRationale:"  # the second task of Distilling step-by-step; never used at inference
PROJECTOR = "distil_feature_projector"  # the learned student -> teacher map, trained with the student, never saved with it


@dataclass
class RoleSetup:
    """What one training (distilled student or baseline) needs; ``kd`` is False for the baseline."""

    role: str
    kd: bool
    kind: str  # classify | generate
    train: ClassifyExamples | GenerateExamples
    validation: ClassifyExamples | GenerateExamples | None
    label_ids: torch.Tensor | None  # [L] (classify)
    # classify extras (the distilled student only)
    teacher_states: torch.Tensor | None = None  # [n, M + 1, Ht]: the mapped teacher layers, then the last
    feature_map: dict[int, int] | None = None  # student hidden-state index -> teacher index
    rationale: GenerateExamples | None = None  # row i: rationale prompt + the teacher's rationale (empty if none)
    # generate, on-policy (the distilled student only)
    teacher_model: Any = None
    max_new_tokens: int = 32
    eos_id: int | None = None

    @property
    def student_layers(self) -> list[int]:
        return [s for s, _ in sorted((self.feature_map or {}).items())] + [-1]

    @property
    def on_policy(self) -> bool:
        return self.teacher_model is not None


# --- small pieces ------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(total_steps: int, warmup_ratio: float):
    """Linear warm-up, then cosine decay to zero, as a LambdaLR factor of the step."""
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def atomic_dir_write(target: Path, write) -> Path:  # noqa: ANN001
    """Call ``write(tmp_folder)`` then move the folder into place, so a reader never sees half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        write(tmp)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def step_rows(order: list[int], step: int, per_step: int, batch: int, accum: int, world: int, rank: int) -> list[list[int]]:
    """This process's micro-batches of optimiser step ``step``: rows of ``order``, split evenly."""
    rows = order[step * per_step : (step + 1) * per_step]
    micro = []
    for m in range(accum):
        group = rows[m * batch * world : (m + 1) * batch * world]
        micro.append(group[rank::world])
    return micro


# --- losses of one micro-batch ----------------------------------------------------------------------------------


def classify_loss(model, batch: dict, setup: RoleSetup, cfg: Any, num_items: float) -> tuple[torch.Tensor, int]:  # noqa: ANN001
    """Summed loss of the micro-batch / num_items; logits only at the answer position, only label rows.

    The distilled student adds, when configured: hidden-state matching through the learned projector
    (``feature_weight``), relation KD on the answer-position states (``relation_weight``, a per-micro-batch
    mean weighted by its share of the step), and the rationale target (``rationale_weight``).
    """
    tokens = int(batch["attention_mask"].sum())
    with_states = setup.kd and "teacher_states" in batch
    if with_states:
        states = answer_states(model, batch["input_ids"], batch["attention_mask"], setup.student_layers)  # [B, M + 1, H]
        _, head = base_and_head(model)
        logits = (states[:, -1] @ head[setup.label_ids].T).float()
    else:
        logits = label_logits(model, batch["input_ids"], batch["attention_mask"], setup.label_ids)  # [B, L]
    ce = L.cross_entropy(logits, batch["hard"], num_items=num_items)
    if not setup.kd:
        return ce, tokens
    teacher = L.probs_to_logprobs(batch["teacher_probs"])
    kd = L.distillation_loss(logits, teacher, kind=cfg.loss, temperature=cfg.temperature, beta=cfg.beta, alpha=cfg.skew_alpha, num_items=num_items)
    loss = L.mixed_loss(ce, kd, cfg.alpha)
    if with_states:
        theirs = batch["teacher_states"]  # [B, M + 1, Ht]
        if cfg.feature_weight > 0 and setup.feature_map:
            pairs = sorted(setup.feature_map.items())
            student_states = {s: states[:, m : m + 1] for m, (s, _) in enumerate(pairs)}
            teacher_states = {t: theirs[:, m : m + 1] for m, (_, t) in enumerate(pairs)}
            projector = getattr(_unwrap(model), PROJECTOR)
            loss = loss + cfg.feature_weight * L.feature_loss(student_states, teacher_states, dict(pairs), projector, kind=cfg.feature_kind, num_items=num_items)
        if cfg.relation_weight > 0 and len(states) >= 3:
            share = len(states) / num_items
            loss = loss + cfg.relation_weight * share * L.relation_loss(states[:, -1], theirs[:, -1], kind=cfg.relation_kind)
    if "rationale_targets" in batch and cfg.rationale_weight > 0:
        decoder, head = base_and_head(model)
        hidden = decoder(input_ids=batch["rationale_input_ids"], attention_mask=batch["rationale_attention_mask"]).last_hidden_state
        keep = batch["rationale_targets"] != -100
        rationale = L.chunked_head_loss(hidden[keep], head, L.summed_cross_entropy_chunk(batch["rationale_targets"][keep]), cfg.chunk_size)
        loss = loss + cfg.rationale_weight * rationale / batch["rationale_norm"]
        tokens += int(batch["rationale_attention_mask"].sum())
    return loss, tokens


def _unwrap(model):  # noqa: ANN001, ANN202
    """The model the projector was attached to, inside DDP's wrapper or not."""
    return getattr(model, "module", model)


def classify_extras(setup: RoleSetup, rows: list[int], step_rows: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The teacher's states and the rationale targets of ``rows`` (the distilled student only)."""
    out: dict[str, torch.Tensor] = {}
    if not setup.kd:
        return out
    if setup.teacher_states is not None:
        out["teacher_states"] = setup.teacher_states[rows]
    data = setup.rationale
    if data is not None:
        with_rationale = [i for i in rows if data.answer_ids[i]]
        norm = data.tokens(step_rows)
        if with_rationale and norm:
            r = generate_batch(data, with_rationale, pad_id, with_topk=False)
            out.update(rationale_input_ids=r["input_ids"], rationale_attention_mask=r["attention_mask"], rationale_targets=r["targets"],
                       rationale_norm=torch.tensor(float(norm)))
    return out


def generate_loss(model, batch: dict, setup: RoleSetup, cfg: Any, num_items: float) -> tuple[torch.Tensor, int]:  # noqa: ANN001
    """Sequence-level KD (CE on teacher text) plus, with a top-k cache, token-level KD; chunked head."""
    decoder, head = base_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    keep = batch["targets"] != -100  # [B, S]
    selected = hidden[keep]  # [N, H]: only answer positions reach the head
    targets = batch["targets"][keep]
    ce_chunk = L.summed_cross_entropy_chunk(targets)
    if setup.kd and "topk_ids" in batch:
        kd_chunk = L.summed_topk_chunk(batch["topk_ids"], batch["topk_logprobs"])
        alpha = cfg.alpha

        def chunk(logits, a, b):  # noqa: ANN001
            return alpha * ce_chunk(logits, a, b) + (1 - alpha) * kd_chunk(logits, a, b)
    else:
        chunk = ce_chunk
    return L.chunked_head_loss(selected, head, chunk, cfg.chunk_size) / num_items, int(batch["attention_mask"].sum())


@torch.no_grad()
def validation_fidelity(model, tokenizer, setup: RoleSetup, cfg: Any, device) -> float | None:  # noqa: ANN001
    """Top-1 agreement with the teacher on the validation split (label, or next answer token)."""
    data = setup.validation
    if data is None:
        return None
    model.eval()
    agree = total = 0
    n = len(data.prompts) if isinstance(data, ClassifyExamples) else len(data.answer_ids)
    for start in range(0, n, cfg.batch_size):
        rows = list(range(start, min(n, start + cfg.batch_size)))
        if isinstance(data, ClassifyExamples):
            batch = classify_batch(tokenizer, data, rows, cfg.max_length)
            logits = label_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device), setup.label_ids)
            agree += int((logits.argmax(-1).cpu() == batch["teacher_probs"].argmax(-1)).sum())
            total += len(rows)
        else:
            batch = generate_batch(data, rows, tokenizer.pad_token_id, with_topk=False)
            decoder, head = base_and_head(model)
            hidden = decoder(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).last_hidden_state
            keep = batch["targets"] != -100
            selected, targets = hidden[keep.to(device)], batch["targets"][keep].to(device)
            for a in range(0, len(selected), cfg.chunk_size):
                agree += int(((selected[a : a + cfg.chunk_size] @ head.T).argmax(-1) == targets[a : a + cfg.chunk_size]).sum())
            total += len(targets)
    model.train()
    return agree / max(total, 1)


# --- checkpoints --------------------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: dict, best_state: dict | None) -> None:  # noqa: ANN001
    def write(tmp: Path) -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "best": best_state}, tmp / "state.pt")
        (tmp / "progress.json").write_text(json.dumps(state, indent=2))

    atomic_dir_write(folder, write)


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[dict, dict | None]:  # noqa: ANN001
    saved = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / "progress.json").read_text()), saved["best"]


def save_model_folder(target: Path, model, tokenizer, task_info: dict) -> None:  # noqa: ANN001
    """A plain transformers folder (LoRA merged in) plus distil_task.json."""
    if hasattr(model, PROJECTOR):
        model = copy.deepcopy(model)
        delattr(model, PROJECTOR)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / TASK_FILE).write_text(json.dumps(task_info, indent=2))

    atomic_dir_write(target, write)


def student_samples(model, setup: RoleSetup, rows: list[int], cfg: Any, pad_id: int, seed: int) -> dict[int, list[int]]:  # noqa: ANN001
    """The student's own completion (through its first EOS) for each of ``rows``: the on-policy data of a step."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    out: dict[int, list[int]] = {}
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        ids, mask = left_pad([setup.train.prompt_ids[i] for i in chunk], pad_id, device)
        completion, keep = sample_completions(model, ids, mask, setup.max_new_tokens, cfg.on_policy_temperature, setup.eos_id, generator)
        out.update(zip(chunk, trim_completions(completion, keep), strict=True))
    return out


# --- one role -----------------------------------------------------------------------------------------------------


def _with_kept_weights(model, best_state: dict | None, cfg: Any):  # noqa: ANN001, ANN202
    """The finished model with the weights ``train.keep`` asks for: the best validation check's, or its own last ones."""
    if best_state is not None and cfg.keep == "best":
        model.load_state_dict(best_state)
    return model


def train_role(build: StudentBuild, setup: RoleSetup, cfg: Any, run_dir: Path, accelerator, console, max_steps: int | None) -> dict:  # noqa: ANN001
    """Train one model from ``build`` (a fresh copy) and return its metrics and curve."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    seed_everything(cfg.seed)
    model = copy.deepcopy(build.model)
    if setup.kd and setup.teacher_states is not None and cfg.feature_weight > 0 and setup.feature_map:
        student_dim, teacher_dim = int(model.config.hidden_size), int(setup.teacher_states.shape[-1])
        model.add_module(PROJECTOR, L.FeatureProjector(student_dim, teacher_dim, setup.student_layers[:-1]))
    if cfg.compile:
        decoder, _ = base_and_head(model)
        decoder.compile(dynamic=True, backend=os.environ.get("DISTIL_COMPILE_BACKEND", "inductor"))
    if cfg.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)  # a tied head shares this tensor
    model.train()
    tokenizer = build.tokenizer
    world, rank = accelerator.num_processes, accelerator.process_index
    n_train = len(setup.train.prompts) if isinstance(setup.train, ClassifyExamples) else len(setup.train.answer_ids)
    per_step = cfg.batch_size * cfg.grad_accum * world
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    total_steps = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup_ratio))
    ckpt = run_dir / "checkpoints" / setup.role
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best": -1.0, "bad_evals": 0, "curve": [], "done": False, "tokens": 0, "seconds": 0.0}
    best_state = None
    if (ckpt / "state.pt").is_file():
        state, best_state = load_checkpoint(ckpt, model, optimizer, scheduler)
    if state["done"]:
        # finished before a crash: hand the model back too, so its folder is (re)written if the crash
        # came between the final checkpoint and the model folder
        state["model"] = _with_kept_weights(model, best_state, cfg)
        return state
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    if setup.label_ids is not None:
        setup.label_ids = setup.label_ids.to(device)
    compute = classify_loss if setup.kind == "classify" else generate_loss
    with_topk = setup.kind == "generate" and setup.kd and setup.train.has_topk
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if cfg.precision == "bf16" else contextlib.nullcontext
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eval_every = cfg.eval_every or steps_per_epoch
    steps_run = 0
    stop = limit_hit = False
    progress = Progress(TextColumn(f"[bold]{setup.role}[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                        TextColumn("fidelity {task.fields[fid]}"), TimeRemainingColumn(), console=console,
                        disable=not accelerator.is_main_process, transient=False)
    with progress:
        bar = progress.add_task(setup.role, total=total_steps, completed=state["global_step"], loss=0.0, tps=0.0, fid="-")
        for epoch in range(state["epoch"], cfg.epochs):
            order = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()
            for step in range(state["step_in_epoch"], steps_per_epoch):
                started = time.perf_counter()
                micro = step_rows(order, step, per_step, cfg.batch_size, cfg.grad_accum, world, rank)
                global_rows = order[step * per_step : (step + 1) * per_step]
                num_items = float(len(global_rows)) if setup.kind == "classify" else float(setup.train.tokens(global_rows))
                samples = None
                if setup.on_policy and on_policy_step_uses_student(cfg.on_policy_lambda, step_rng(cfg.seed, state["global_step"])):
                    samples = student_samples(accelerator.unwrap_model(model), setup, [i for rows in micro for i in rows], cfg, pad_id,
                                              seed=cfg.seed * 1_000_003 + state["global_step"] * 97 + rank)
                    local = torch.tensor(float(sum(len(c) for c in samples.values())), device=device)
                    num_items = max(1.0, float(accelerator.reduce(local, "sum")))
                step_loss, step_tokens = 0.0, 0
                for m, rows in enumerate(micro):
                    sync = contextlib.nullcontext() if m == len(micro) - 1 else accelerator.no_sync(model)
                    with sync:
                        if not rows:  # a short last step can leave a process without rows; it still joins the all-reduce
                            loss = sum(p.sum() * 0.0 for p in params)
                            tokens = 0
                        else:
                            if samples is not None:
                                with autocast():
                                    loss, tokens = on_policy_loss(model, setup.teacher_model, [setup.train.prompt_ids[i] for i in rows],
                                                                  [setup.train.teacher_prompt_ids[i] for i in rows], [samples[i] for i in rows],
                                                                  pad_id, cfg, num_items)
                            else:
                                if setup.kind == "classify":
                                    batch = classify_batch(tokenizer, setup.train, rows, cfg.max_length)
                                    batch.update(classify_extras(setup, rows, global_rows, pad_id))
                                else:
                                    batch = generate_batch(setup.train, rows, pad_id, with_topk)
                                batch = {k: v.to(device) for k, v in batch.items()}
                                with autocast():
                                    loss, tokens = compute(model, batch, setup, cfg, num_items)
                        # DDP averages gradients over processes; the loss is already a share of the global sum
                        accelerator.backward(loss * world)
                    step_loss += float(loss.detach())
                    step_tokens += tokens
                accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                elapsed = time.perf_counter() - started
                step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=device), "sum"))
                step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=device), "sum"))
                state["tokens"] += step_tokens
                state["seconds"] += elapsed
                state["global_step"] += 1
                state["step_in_epoch"] = step + 1
                point = {"step": state["global_step"], "epoch": epoch, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
                if setup.on_policy:
                    point["on_policy"] = samples is not None
                steps_run += 1
                if state["global_step"] % eval_every == 0 or step == steps_per_epoch - 1:
                    fidelity = validation_fidelity(model, tokenizer, setup, cfg, device)
                    point["validation_fidelity"] = fidelity
                    if fidelity is not None and fidelity > state["best"]:
                        state["best"], state["bad_evals"] = fidelity, 0
                        best_state = {k: v.detach().cpu().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
                    elif fidelity is not None:
                        state["bad_evals"] += 1
                        stop = cfg.patience > 0 and state["bad_evals"] >= cfg.patience
                state["curve"].append(point)
                progress.update(bar, advance=1, loss=step_loss, tps=state["tokens"] / max(state["seconds"], 1e-9),
                                fid=f"{point.get('validation_fidelity', state['best']):.3f}" if state["best"] >= 0 else "-")
                limit_hit = max_steps is not None and steps_run >= max_steps
                if stop or limit_hit:
                    break
            if state["step_in_epoch"] >= steps_per_epoch:
                state["epoch"], state["step_in_epoch"] = epoch + 1, 0
            if stop or limit_hit:
                break
    finished = stop or state["epoch"] >= cfg.epochs
    state["done"] = finished
    state["stopped_early"] = stop
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        save_checkpoint(ckpt, unwrapped, optimizer, scheduler, state, best_state)
    if finished:
        state["model"] = _with_kept_weights(unwrapped, best_state, cfg)
    accelerator.wait_for_everyone()
    return state


# --- the recipe ------------------------------------------------------------------------------------------------------


def new_run_id(dataset_hash: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{dataset_hash.split(':')[-1][:8]}"


def _teacher_folder(spec) -> Path | None:  # noqa: ANN001
    teacher = spec.teacher()
    if teacher.scheme not in ("hf", "gguf"):
        return None
    from distil.teachers.loading import local_model_folder

    return local_model_folder(teacher.source)[0]


def train_run(
    project: Any,
    *,
    baseline: bool = True,
    run_id: str | None = None,
    max_steps: int | None = None,
    actor: str | None = None,
    console: Any = None,
    cpu: bool | None = None,
) -> str:
    """Train the distilled student (and, unless ``baseline=False``, the hard-label baseline) on the newest
    curated dataset; write ``.distil/runs/<run_id>/`` and one ``run.trained`` ledger row per role.

    Passing the ``run_id`` of an unfinished run resumes it from its checkpoints. ``max_steps`` stops each
    role after that many optimiser steps in this call (its checkpoint is kept; call again to go on).
    Returns the run id.
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from rich.console import Console

    spec, cfg = project.spec, project.spec.train
    console = console or Console()
    accelerator = Accelerator(cpu=cpu if cpu is not None else not torch.cuda.is_available())
    data = latest_curated(project)
    ids = [run_id or new_run_id(data.dataset_hash)]
    broadcast_object_list(ids)
    run_id = ids[0]
    run_dir = project.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(cfg.seed)
    build = build_student(spec.student, _teacher_folder(spec), seed=cfg.seed)
    tokenizer = build.tokenizer
    kind = spec.task.kind
    if kind == "classify":
        words = [lab.verbalizers[0] for lab in spec.task.labels]
        label_ids = torch.tensor(label_token_ids(tokenizer, words))
        train_data = classify_examples(data.splits["train"], spec.task.label_names)
        validation = classify_examples(data.splits["validation"], spec.task.label_names) if data.splits["validation"] else None
        task_info = {"kind": "classify", "prompt_template": CLASSIFY_TEMPLATE, "labels": spec.task.label_names,
                     "label_words": words, "label_token_ids": label_ids.tolist(), "max_length": cfg.max_length}
    else:
        label_ids = None
        train_data = generate_examples(data.splits["train"], tokenizer, cfg.max_length)
        attach_logit_cache(project, spec, data, train_data, tokenizer, cfg, console, accelerator)
        validation = generate_examples(data.splits["validation"], tokenizer, cfg.max_length) if data.splits["validation"] else None
        task_info = {"kind": "generate", "prompt_template": GENERATE_TEMPLATE, "max_new_tokens": spec.task.max_new_tokens,
                     "max_length": cfg.max_length}
    train_config = {"run_id": run_id, "dataset_hash": data.dataset_hash, "dataset_path": str(data.path), "train": cfg.model_dump(),
                    "student": build.description, "size": build.size_row(), "processes": accelerator.num_processes}
    if accelerator.is_main_process:
        write_json(run_dir / "train_config.json", train_config)
        size = build.size_row()
        console.print(f"student: {build.description}: {size['student_params']:,} parameters"
                      + (f" ({size['fraction_of_teacher']:.1%} of the teacher's {size['teacher_params']:,})" if size["teacher_params"] else "")
                      + (f"; size target ≤ {size['size_max_params']:,}: {'met' if size['within_size_target'] else 'NOT met'}" if size["size_max_params"] else ""))

    extras = distillation_extras(project, spec, cfg, build, train_data, console)
    metrics: dict[str, Any] = {"run_id": run_id, "dataset_hash": data.dataset_hash, "size": build.size_row()}
    curves: dict[str, Any] = {}
    finished_all = True
    for role in ROLES if baseline else ROLES[:1]:
        setup = RoleSetup(role, role == "student", kind, train_data, validation, label_ids.clone() if label_ids is not None else None,
                          **(extras if role == "student" else {}))
        state = train_role(build, setup, cfg, run_dir, accelerator, console, max_steps)
        curves[role] = state["curve"]
        if "model" not in state and not state.get("done"):
            finished_all = False
            continue
        folder = run_dir / role
        if accelerator.is_main_process and "model" in state:
            save_model_folder(folder, state["model"], tokenizer, task_info)
        metrics[role] = {
            "best_validation_fidelity": state["best"] if state["best"] >= 0 else None,
            "kept": cfg.keep,
            "final_train_loss": state["curve"][-1]["loss"] if state["curve"] else None,
            "steps": state["global_step"], "tokens": state["tokens"],
            "tokens_per_s": state["tokens"] / max(state["seconds"], 1e-9),
            "stopped_early": state.get("stopped_early", False),
        }
    if accelerator.is_main_process:
        write_json(run_dir / "curve.json", curves)
        if finished_all:
            write_json(run_dir / "metrics.json", metrics)
            for role in [r for r in ROLES if r in metrics]:
                if project.ledger.latest("runs", "run_id = ? AND role = ?", (run_id, role)) is None:
                    project.ledger.append(
                        "run.trained", {"run_id": run_id, "role": role, "dataset_hash": data.dataset_hash, "metrics": metrics[role]},
                        actor=actor or spec.roles.driver, files=[run_dir / role], table="runs",
                        row={"run_id": run_id, "dataset_hash": data.dataset_hash, "role": role,
                             "path": str((run_dir / role).relative_to(project.root)), "metrics": metrics[role]},
                    )
    accelerator.wait_for_everyone()
    return run_id


def distillation_extras(project, spec, cfg, build: StudentBuild, train_data, console) -> dict[str, Any]:  # noqa: ANN001
    """What the distilled student needs beyond the records: the live teacher for on-policy steps, the
    teacher's answer-position states for feature / relation KD, the rationale targets. Refuses settings
    that cannot apply, naming the field."""
    from distil.train.plan import require_same_vocabulary

    teacher = spec.teacher()
    local = teacher.scheme in ("hf", "gguf")
    kind = spec.task.kind
    out: dict[str, Any] = {}
    if cfg.on_policy_lambda > 0:
        if kind != "generate":
            raise TrainError("train.on_policy_lambda applies to generate tasks; a classify student already learns the teacher's whole label distribution",
                             hint="set train.on_policy_lambda: 0")
        if not local:
            raise TrainError(f"train.on_policy_lambda needs a local teacher to score the student's samples; {teacher.id} is {teacher.scheme}:",
                             hint="set train.on_policy_lambda: 0 (the API teacher's top-k and text are used off-policy)")
        from distil.teachers.loading import load_causal_lm
        from distil.train.logit_cache import teacher_prompt_ids

        model, tokenizer, _ = load_causal_lm(teacher.source)
        require_same_vocabulary(tokenizer, build.tokenizer, what="on-policy distillation")
        if not train_data.teacher_prompt_ids:
            train_data.teacher_prompt_ids = teacher_prompt_ids(tokenizer, spec.task.instruction, train_data.inputs)
        out.update(teacher_model=model.to(next(build.model.parameters()).device),
                   max_new_tokens=cfg.on_policy_max_new_tokens or spec.task.max_new_tokens, eos_id=build.tokenizer.eos_token_id)
    wants_states = cfg.feature_weight > 0 or cfg.relation_weight > 0
    if wants_states or cfg.rationale_weight > 0:
        if kind != "classify":
            field = "feature_weight" if cfg.feature_weight > 0 else "relation_weight" if cfg.relation_weight > 0 else "rationale_weight"
            raise TrainError(f"train.{field} applies to classify tasks", hint=f"set train.{field}: 0 for a generate task")
    if wants_states:
        if not local:
            raise TrainError(f"train.feature_weight / train.relation_weight need the teacher's hidden states; {teacher.id} is {teacher.scheme}:",
                             hint="set them to 0, or use a local (hf: or gguf:) teacher")
        from transformers import AutoConfig

        from distil.teachers.loading import local_model_folder
        from distil.train.teacher_states import check_layers, teacher_answer_states

        teacher_layers = int(AutoConfig.from_pretrained(str(local_model_folder(teacher.source)[0])).num_hidden_layers)
        mapping = dict(cfg.feature_layers) if cfg.feature_layers else {-1: -1}
        check_layers(mapping, int(build.model.config.num_hidden_layers), teacher_layers)
        layers = [t for _, t in sorted(mapping.items())] + [-1]
        out.update(feature_map=mapping, teacher_states=teacher_answer_states(project, teacher.source, train_data.prompts, layers, build.tokenizer,
                                                                             cfg.max_length, console=console))
    if cfg.rationale_weight > 0:
        if not any(train_data.rationales):
            console.print("[yellow]train.rationale_weight is set but no training record carries a rationale "
                          "(data.rationales: true asks the teacher for them); training on labels only[/yellow]")
        else:
            out["rationale"] = rationale_examples(train_data, build.tokenizer, cfg.max_length)
    return out


def rationale_examples(data: ClassifyExamples, tokenizer, max_length: int) -> GenerateExamples:  # noqa: ANN001
    """Row i: "<input>\nRationale:" then the teacher's rationale and EOS (no answer tokens when it has none)."""
    out = GenerateExamples([], [])
    for text, rationale in zip(data.inputs, data.rationales, strict=True):
        answer = tokenizer(" " + rationale, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] if rationale else []
        answer = answer[: max(1, max_length // 2)] if answer else []
        prompt = tokenizer(RATIONALE_TEMPLATE.replace("{input}", text), add_special_tokens=False).input_ids
        out.prompt_ids.append(prompt[-(max_length - len(answer)) :])
        out.answer_ids.append(answer)
    return out


def attach_logit_cache(project, spec, data, examples: GenerateExamples, tokenizer, cfg, console, accelerator) -> None:  # noqa: ANN001
    """Give generate examples the teacher's top-k for every answer token: from the records when they carry
    it, else from the offline cache (built once from a local teacher). Leaves sequence-level KD alone
    when neither is possible."""
    if examples.has_topk:
        return
    teacher = spec.teacher()
    if teacher.scheme not in ("hf", "gguf"):
        return
    from distil.train.logit_cache import build_or_load_cache

    if cfg.alpha >= 1.0:
        return  # pure sequence-level KD: no teacher logits needed
    cache = None
    if accelerator.is_main_process:  # one process builds the cache, the others read it
        cache = build_or_load_cache(project, teacher.source, examples, cfg.topk_cache_k, tokenizer, console=console)
    accelerator.wait_for_everyone()
    if cache is None:
        cache = build_or_load_cache(project, teacher.source, examples, cfg.topk_cache_k, tokenizer)
    if cache is None:
        return
    examples.topk_ids, examples.topk_logprobs = cache.per_example()
    if examples.topk_ids and len(examples.topk_ids[0]) != len(examples.answer_ids[0]):
        raise TrainError("the offline teacher cache does not match the training examples", hint="delete .distil/cache/topk and train again")
