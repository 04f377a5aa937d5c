"""`distil plan`: will this training fit, how much disk will the cache take, about how long will it run?

Estimates are deliberately simple and written out term by term, so a user can see which one to cut:

- weights: parameters × bytes per parameter (float32: 4), for the teacher only when it must stay in
  memory (on-policy mode); with the offline cache the teacher is unloaded before training;
- optimiser: AdamW keeps float32 gradients and two moments: 12 bytes per trainable parameter;
- activations: about 16 values of 4 bytes per token, per hidden unit, per layer (kept for backward);
- logits: classify keeps [batch, labels]; generate keeps one [chunk, vocab] float32 block and its
  gradient; unchunked it would be [batch, seq, vocab] (shown for comparison);
- time: steps × epochs × seconds per step, the seconds measured on this machine by a few real optimiser
  steps of the student at the run's batch shape (:mod:`distil.train.throughput`, cached in the project);
  only a device that is not here falls back to 6 × parameters × tokens FLOPs at an assumed rate. Before
  `distil curate` the number of training examples is estimated from the seeds and the synthetic budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from distil.data.sources import read_seed_inputs
from distil.errors import DataError, TrainError
from distil.teachers.loading import local_model_folder
from distil.train.batches import curated_splits
from distil.train.logit_cache import bytes_per_token
from distil.train.students import build_student, count_params, label_token_ids
from distil.train.throughput import (
    Throughput,
    cached_throughput,
    measure_step_seconds,
    store_throughput,
    throughput_key,
)
from distil.train.vocab import same_vocabulary

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from distil.spec.io import Project
    from distil.spec.models import TrainSpec
    from distil.train.students import StudentBuild

# Sustained training FLOP/s we plan with: a conservative fraction of what the device does.
ASSUMED_FLOPS = {"cpu": 2e10, "cuda": 2e14}


@dataclass
class Plan:
    memory: dict[str, int]  # component -> bytes at peak
    available_bytes: int
    cache_bytes: int
    seconds: float  # training one model (the student; the baseline takes about as long again)
    train_tokens: int
    device: str
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # combinations that cannot train, whatever the memory
    examples: int = 0  # training examples per epoch
    examples_from: str = ""  # where that number comes from
    steps: int = 0  # micro-batches over all epochs
    throughput: Throughput | None = None  # the measured seconds per step (None: assumed FLOP rate)
    time_method: str = ""  # how ``seconds`` was estimated, in words

    @property
    def peak_bytes(self) -> int:
        return sum(v for k, v in self.memory.items() if not k.startswith("("))

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= 0.9 * self.available_bytes


def available_memory(device: str) -> int:
    """Free GPU memory, or the machine's physical memory on CPU."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def estimate(project: Project, device: str | None = None, available_bytes: int | None = None) -> Plan:
    """The plan for ``project`` on ``device`` (default: cuda when present, else cpu)."""
    # slow to import; only a plan pays for it
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec, cfg = project.spec, project.spec.train
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    available = available_bytes or available_memory(device)
    teacher_spec = spec.teacher()
    teacher_folder = local_model_folder(teacher_spec.source)[0] if teacher_spec.scheme in ("hf", "gguf") else None
    build = build_student(spec.student, teacher_folder, seed=cfg.seed, labels=spec.task.label_names or None)
    student_config = build.model.config
    hidden, layers = student_config.hidden_size, student_config.num_hidden_layers
    trainable = sum(p.numel() for p in build.model.parameters() if p.requires_grad)

    examples, lengths, examples_from = training_examples(project, build.tokenizer)
    seq = min(max(lengths) + 4, cfg.max_length) if lengths else cfg.max_length
    train_tokens = sum(min(n + 4, cfg.max_length) for n in lengths) * examples // max(len(lengths), 1)
    answer_tokens = answer_token_count(project, build.tokenizer)

    tokens_per_batch = cfg.batch_size * seq
    memory = {
        "student weights": build.params * 4,
        "gradients + AdamW moments": trainable * 12,
        "activations": 16 * 4 * tokens_per_batch * hidden * layers,
    }
    on_policy = cfg.on_policy.fraction > 0
    if teacher_folder is not None and on_policy:
        teacher_cfg = AutoConfig.from_pretrained(str(teacher_folder))
        with torch.device("meta"):
            memory["teacher weights (on-policy)"] = count_params(AutoModelForCausalLM.from_config(teacher_cfg)) * 4
    notes: list[str] = []
    refusals: list[str] = []
    if spec.task.kind == "classify":
        memory["logits (answer position × labels)"] = cfg.batch_size * len(spec.task.labels) * 4 * 3
        cache_bytes = 0
        if build.is_encoder:
            notes.append(
                "encoder student: KD over the task's labels, not the vocabulary, so teacher and student tokenizers "
                "need not match"
            )
    else:
        vocab = build.model.get_output_embeddings().weight.shape[0]
        memory["logits (one chunk × vocabulary, with gradient)"] = min(cfg.chunk_size, tokens_per_batch) * vocab * 4 * 3
        memory["(unchunked logits, for comparison)"] = tokens_per_batch * vocab * 4 * 3
        cache_bytes = (
            answer_tokens * bytes_per_token(cfg.distillation.topk_cache_k, vocab) if cfg.distillation.alpha < 1.0 else 0
        )
        if teacher_folder is not None and cfg.distillation.alpha < 1.0:
            teacher_tok = AutoTokenizer.from_pretrained(str(teacher_folder))
            ok, why = same_vocabulary(teacher_tok, build.tokenizer)
            if not ok and on_policy:
                refusals.append(
                    f"tokenizers differ ({why}): on-policy steps compare the teacher's and the student's token ids"
                )
            elif not ok:
                notes.append(
                    f"tokenizers differ ({why}): token-level KD uses Universal Logit Distillation over tokens aligned "
                    "by their text (train.distillation.loss: uld), with α·CE on the teacher's text"
                )
    steps = -(-examples // cfg.batch_size) * cfg.epochs
    timed_seq = min(int(np.percentile(lengths, 90)) + 4, cfg.max_length) if lengths else seq
    throughput = step_throughput(project, build, timed_seq, device) if _device_here(device) else None
    if throughput is not None:
        seconds = steps * throughput.seconds_per_step
        method = (
            f"{steps:,} steps ({-(-examples // cfg.batch_size):,} per epoch × {cfg.epochs} epochs) × "
            f"{throughput.seconds_per_step:.3f} s per step, measured on this machine ({throughput.device}, "
            f"{throughput.threads} threads, batch {throughput.batch} × {throughput.seq} tokens, "
            f"{throughput.steps} timed steps"
            + (f", load average {throughput.load_average:.1f}" if throughput.load_average is not None else "")
            + (", cached in .distil/cache/throughput.json" if throughput.cached else "")
            + ")"
        )
    else:
        seconds = 6 * build.params * train_tokens * cfg.epochs / ASSUMED_FLOPS[device]
        method = (
            f"6 × parameters × tokens FLOPs at an assumed {ASSUMED_FLOPS[device]:.0e} FLOP/s ({device} is not here)"
        )
    plan = Plan(
        memory,
        available,
        cache_bytes,
        seconds,
        train_tokens,
        device,
        notes=notes,
        refusals=refusals,
        examples=examples,
        examples_from=examples_from,
        steps=steps,
        throughput=throughput,
        time_method=method,
    )
    if not plan.fits:
        plan.advice += advice_for(plan, cfg, spec.task.kind)
    return plan


def training_examples(project: Project, tokenizer: PreTrainedTokenizerBase) -> tuple[int, list[int], str]:
    """(training examples per epoch, token lengths of the examples known, where the count comes from).

    After `distil curate`: the curated train split. Before: the seeds and the synthetic budget times the train
    share of the split, the lengths those of the seeds (plus the answer, for a generate task)."""
    spec = project.spec
    try:
        train = curated_splits(project).splits["train"]
        texts = [r.input + " " + (r.teacher_text or "") for r in train]
        return len(train), [len(tokenizer(t).input_ids) for t in texts], "the curated train split"
    except DataError:
        pass
    seeds_path = project.path(spec.data.seeds)
    try:
        seeds = read_seed_inputs(seeds_path, spec) if seeds_path.is_file() else []
    except DataError:
        seeds = []  # `distil check` names the bad line; the plan goes on with the budget alone
    share = spec.data.split["train"] * (1 - spec.data.probe)
    budget = spec.data.synthetic_budget if spec.data.synthetic != "none" else 0
    examples = max(1, round((len(seeds) + budget) * share))
    answer = spec.task.max_new_tokens if spec.task.kind == "generate" else 0
    lengths = [len(tokenizer(item.input).input_ids) + answer for item in seeds]
    how = (
        f"estimated before curate: ({len(seeds)} seeds + {budget} synthetic) × train share {share:.2f}; curation "
        "removes some"
    )
    return examples, lengths, how


def answer_token_count(project: Project, tokenizer: PreTrainedTokenizerBase) -> int:
    """Teacher answer tokens in the curated train split (the top-k cache's size); 0 before curate."""
    try:
        train = curated_splits(project).splits["train"]
    except DataError:
        return 0
    return sum(len(tokenizer(r.teacher_text or "").input_ids) + 1 for r in train)


def _device_here(device: str) -> bool:
    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def step_throughput(project: Project, build: StudentBuild, seq: int, device: str) -> Throughput:
    """Seconds per training step of the spec's student on this machine: cached, else measured (and cached)."""
    spec, cfg = project.spec, project.spec.train
    labels = spec.task.label_names
    key = throughput_key(
        spec.student.model_dump(mode="json"),
        spec.task.kind,
        len(labels),
        cfg.batch_size,
        seq,
        device,
        torch.get_num_threads(),
        {"precision": cfg.precision, "freeze_embeddings": cfg.freeze_embeddings},
    )
    path = project.state_dir / "cache" / "throughput.json"
    found = cached_throughput(path, key)
    if found is not None:
        return found
    rows = None
    if spec.task.kind == "classify" and not build.is_encoder:
        rows = label_token_ids(build.tokenizer, [lab.verbalizers[0] for lab in spec.task.labels])
    measured = measure_step_seconds(
        build, spec.task.kind, rows, len(labels), cfg.batch_size, seq, device, cfg.precision, cfg.freeze_embeddings
    )
    store_throughput(path, key, measured)
    return measured


def advice_for(plan: Plan, cfg: TrainSpec, kind: str) -> list[str]:
    """What to change, biggest term first."""
    out = []
    biggest = max((k for k in plan.memory if not k.startswith("(")), key=plan.memory.get)
    if biggest.startswith("teacher"):
        out.append("use the offline cache (train.on_policy.fraction: 0) so the teacher is not in memory while training")
    if biggest == "activations" or cfg.batch_size > 1:
        smaller = max(1, cfg.batch_size // 2)
        out.append(
            f"batch {smaller} with train.grad_accum {cfg.grad_accum * 2} (same effective batch, half the activations)"
        )
    if biggest.startswith("logits") and kind == "generate":
        out.append(f"a smaller train.chunk_size (now {cfg.chunk_size})")
    if biggest.startswith("gradients"):
        out.append("student.lora: true (only adapters get gradients and optimiser state), or a smaller student")
    return out


def require_fits(plan: Plan) -> None:
    if not plan.fits:
        raise TrainError(
            f"training needs about {plan.peak_bytes / 2**30:.2f} GiB but {plan.device} has "
            f"{plan.available_bytes / 2**30:.2f} GiB",
            hint="; ".join(plan.advice) or "choose a smaller student",
        )
    for refusal in plan.refusals:
        raise TrainError(
            f"teacher and student {refusal}",
            hint="set train.on_policy.fraction: 0 (token-level KD then aligns the two tokenizers by text, ULD), or "
            "use student.init teacher-layers:N so the student shares the teacher's tokenizer",
        )
