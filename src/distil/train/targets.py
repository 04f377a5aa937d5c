"""`distil plan --target phone|laptop|browser`: which students fit a device, before any of them is trained.

For a student of P parameters the file is P × bytes per weight of its export type, and running it takes that
plus its key-value cache at the task's longest sequence and one row of logits. Each device has a budget for a
model's memory (``DEVICE_BUDGETS``, with where each figure comes from); a student fits at a type when the
running memory is within the budget. The inits considered are ``teacher-layers:N`` for every N up to the
teacher's depth (the spec's own student is shown first, whatever its source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distil.errors import TrainError
from distil.teachers.loading import local_model_folder
from distil.train.students import config_params, evenly_spread

if TYPE_CHECKING:
    from distil.spec.io import Project

GiB = 2**30

# Memory a model may take on the device (weights + KV cache + logits), in bytes.
DEVICE_BUDGETS: dict[str, tuple[int, str]] = {
    # Gemini Nano-1, Google's on-device model for Android phones, is 1.8B parameters quantized to 4 bits
    # (Gemini technical report, Google DeepMind, Dec 2023): about 1 GiB of weights on 8 GB phones.
    "phone": (1 * GiB, "about Gemini Nano-1's weights (1.8B at 4 bits; Gemini report, 2023) on an 8 GB phone"),
    # WebAssembly's 32-bit memory is at most 4 GiB (V8 blog "Up to 4GB of memory in WebAssembly", 2020); the
    # runtime, its buffers and the page take their share, so a model gets half of it.
    "browser": (2 * GiB, "half of WebAssembly's 4 GiB memory (V8, 2020), the rest for the runtime and the page"),
    # Apple's MacBook Air starts at 16 GB of memory (Apple newsroom, Oct 2024); half is left to the OS and apps.
    "laptop": (8 * GiB, "half of a 16 GB laptop (the MacBook Air's base memory since Oct 2024, Apple)"),
}

# Bytes per weight of each export type (llama.cpp block types: 32 weights + one float16 scale per block).
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
KV_BYTES = 2  # runtimes keep the key-value cache in float16


@dataclass(frozen=True)
class SizeRow:
    """One student at one export type: its file and the memory it runs in."""

    init: str
    params: int
    gguf_type: str
    file_bytes: int
    memory_bytes: int
    fits: bool


@dataclass
class TargetPlan:
    target: str
    budget_bytes: int
    budget_source: str
    context: int
    student: list[SizeRow]  # the spec's student at every type
    inits: list[SizeRow]  # teacher-layers:N at every type

    def largest_fitting(self, gguf_type: str) -> SizeRow | None:
        """The deepest teacher-layers init that fits at ``gguf_type``; None when none does."""
        rows = [r for r in self.inits if r.gguf_type == gguf_type and r.fits]
        return max(rows, key=lambda r: r.params) if rows else None


def running_memory(params: int, gguf_type: str, config: Any, context: int) -> tuple[int, int]:
    """(file bytes, running bytes) of a causal LM of ``params`` stored as ``gguf_type``: the weights, a float16
    key-value cache of ``context`` tokens (2 × layers × kv heads × head dim per token), one float32 row of logits."""
    file_bytes = int(params * BYTES_PER_WEIGHT[gguf_type])
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_cache = 2 * config.num_hidden_layers * kv_heads * head_dim * context * KV_BYTES
    logits = config.vocab_size * 4
    return file_bytes, file_bytes + kv_cache + logits


def _rows(init: str, config: Any, context: int, budget: int) -> list[SizeRow]:
    params = config_params(config)
    rows = []
    for gguf_type in BYTES_PER_WEIGHT:
        file_bytes, memory = running_memory(params, gguf_type, config, context)
        rows.append(SizeRow(init, params, gguf_type, file_bytes, memory, memory <= budget))
    return rows


def plan_target(project: Project, target: str) -> TargetPlan:
    """What fits ``target`` (a key of ``DEVICE_BUDGETS``): the spec's student and every teacher-layers:N init."""
    import copy

    from transformers import AutoConfig

    if target not in DEVICE_BUDGETS:
        raise TrainError(f"--target {target!r}: choose one of {', '.join(DEVICE_BUDGETS)}")
    spec = project.spec
    if spec.student.is_encoder:
        raise TrainError("--target plans causal students (the ones `distil export --format gguf` writes)")
    budget, source = DEVICE_BUDGETS[target]
    teacher = spec.teacher()
    if teacher.scheme not in ("hf", "gguf"):
        raise TrainError(
            f"teachers[].source {teacher.source}: --target needs a local teacher, whose layers the inits are cut from"
        )
    teacher_config = AutoConfig.from_pretrained(str(local_model_folder(teacher.source)[0]))
    context = spec.train.max_length

    def cut(n: int) -> Any:
        evenly_spread(teacher_config.num_hidden_layers, n)  # refuses N deeper than the teacher, as training would
        config = copy.deepcopy(teacher_config)
        config.num_hidden_layers = n
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:n]
        return config

    if spec.student.init:
        student_config = cut(int(spec.student.init.split(":", 1)[1]))
        student_name = spec.student.init
    elif spec.student.config:
        student_config = AutoConfig.for_model(
            spec.student.config.get("model_type", teacher_config.model_type),
            **{k: v for k, v in spec.student.config.items() if k not in ("model_type", "tokenizer")},
        )
        student_name = "student.config"
    else:
        student_config = AutoConfig.from_pretrained(str(spec.student.path))
        student_name = f"student.path {spec.student.path}"
    inits = [
        row
        for n in range(1, teacher_config.num_hidden_layers + 1)
        for row in _rows(f"teacher-layers:{n}", cut(n), context, budget)
    ]
    return TargetPlan(target, budget, source, context, _rows(student_name, student_config, context, budget), inits)
