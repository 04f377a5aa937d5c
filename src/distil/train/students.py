"""Build the student, and load a trained one for prediction.

Two kinds of student (``student.kind`` in the spec). A causal LM (``causal``) starts one of three ways:

- ``init: teacher-layers:N``: the teacher's own architecture with N layers; embeddings, final norm,
  head and an evenly spread subset of the teacher's layers are copied in (DistilBERT's recipe).
- ``config: {...}``: any transformers config, freshly initialised (the teacher's tokenizer).
- ``path: DIR``: a local checkpoint folder.

An encoder (``encoder``, classify tasks) is a local BERT-family folder (default: the embedded
all-MiniLM-L6-v2) with a classification head over the labels; see :mod:`distil.train.encoders`.

A trained student is a plain transformers folder plus ``distil_task.json`` (how it is asked, and
``student_kind``); :func:`load_predictor` reads either kind back for evaluation and serving.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from distil.errors import TrainError
from distil.teachers.decoding import decode_rows, end_ids
from distil.train.encoders import build_encoder, encoder_lora_targets, head_scores
from distil.train.heads import base_and_head, output_logits

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.models import StudentSpec

TASK_FILE = "distil_task.json"
CLASSIFY_TEMPLATE = "{input}\nLabel:"  # the bare input and a short fixed suffix; the label word follows
GENERATE_TEMPLATE = "{input}\nAnswer:"


# --- building -----------------------------------------------------------------------------------------


@dataclass
class StudentBuild:
    model: PreTrainedModel  # peft-wrapped with LoRA
    tokenizer: PreTrainedTokenizerBase
    description: str
    params: int
    teacher_params: int | None
    size_max_params: int | None
    kind: str = "causal"  # causal | encoder (StudentSpec.kind)

    @property
    def is_encoder(self) -> bool:
        return self.kind == "encoder"

    def size_row(self) -> dict[str, Any]:
        """Parameters and size against the teacher and the spec's target, for the console and metrics."""
        return {
            "student_params": self.params,
            "student_bytes_fp32": self.params * 4,
            "teacher_params": self.teacher_params,
            "fraction_of_teacher": (self.params / self.teacher_params) if self.teacher_params else None,
            "size_max_params": self.size_max_params,
            "within_size_target": (self.params <= self.size_max_params) if self.size_max_params else None,
        }


def count_params(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding and head count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def config_params(config: PretrainedConfig) -> int:
    """The parameters of a causal LM built from ``config``, counted on the meta device: no weights are read or
    allocated, so sizing the student against a teacher does not load the teacher."""
    from transformers import AutoModelForCausalLM  # slow to import; loading the spec does not need it

    with torch.device("meta"):
        return count_params(AutoModelForCausalLM.from_config(config))


def evenly_spread(teacher_layers: int, student_layers: int) -> list[int]:
    """Which teacher layers a student of ``student_layers`` copies: first and last included, even gaps."""
    if not 1 <= student_layers <= teacher_layers:
        raise TrainError(
            f"student.init teacher-layers:{student_layers}: the teacher has {teacher_layers} layers",
            hint=f"choose N between 1 and {teacher_layers}",
        )
    if student_layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def student_from_teacher_layers(teacher: PreTrainedModel, n_layers: int) -> PreTrainedModel:
    """A copy of ``teacher``'s architecture with ``n_layers`` layers, its weights copied in (no training)."""
    from transformers import (
        AutoModelForCausalLM,  # slow to import; loading the spec or a run folder does not need it
    )

    config = teacher.config.__class__.from_dict(teacher.config.to_dict())
    picked = evenly_spread(config.num_hidden_layers, n_layers)
    config.num_hidden_layers = n_layers
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[i] for i in picked]
    student = AutoModelForCausalLM.from_config(config)
    source = teacher.state_dict()
    layer_key = re.compile(r"\.layers\.(\d+)\.")
    copied = {}
    for key in student.state_dict():
        match = layer_key.search(key)
        teacher_key = (
            key if match is None else key.replace(match.group(0), f".layers.{picked[int(match.group(1))]}.", 1)
        )
        if teacher_key in source:
            copied[key] = source[teacher_key]
    missing, _ = student.load_state_dict(copied, strict=False)
    missing = [k for k in missing if "rotary" not in k and "inv_freq" not in k]
    if missing:
        raise TrainError(f"student.init teacher-layers:{n_layers}: no teacher weights for {', '.join(missing[:3])}")
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    return student


def apply_lora(model: PreTrainedModel, rank: int = 8, encoder: bool = False) -> PreTrainedModel:
    """Wrap ``model`` with LoRA adapters on its attention and MLP projections (peft); an encoder's
    classification head is trained in full beside them (``TaskType.SEQ_CLS``)."""
    from peft import (  # optional and slow to import; only LoRA students need it
        LoraConfig,
        TaskType,
        get_peft_model,
    )

    if encoder:
        targets = encoder_lora_targets(model)
        if not targets:
            raise TrainError("student.lora: found no attention or feed-forward layers to adapt in this encoder")
        return get_peft_model(
            model,
            LoraConfig(
                task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0
            ),
        )
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = sorted(
        names & {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "c_attn", "c_proj"}
    )
    if not targets:
        raise TrainError("student.lora: found no attention or MLP projections to adapt in this architecture")
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0))


def build_student(
    student_spec: StudentSpec, teacher_folder: Path | None, seed: int = 0, labels: list[str] | None = None
) -> StudentBuild:
    """The student the spec asks for; ``teacher_folder`` is the local teacher's transformers folder (or None);
    ``labels`` are the task's label names (an encoder student's head has one output per label)."""
    from transformers import (  # slow to import; only building a student pays for it
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
    )

    torch.manual_seed(seed)
    teacher = None
    if teacher_folder is not None and student_spec.init and not student_spec.is_encoder:
        teacher = AutoModelForCausalLM.from_pretrained(str(teacher_folder), dtype=torch.float32)
    teacher_config = AutoConfig.from_pretrained(str(teacher_folder)) if teacher_folder is not None else None
    teacher_params = config_params(teacher_config) if teacher_config is not None else None
    if student_spec.is_encoder:
        if not labels:
            raise TrainError("student.kind encoder: the task has no labels (encoder students classify)")
        model, tokenizer, description = build_encoder(student_spec, labels)
    elif student_spec.init:
        if teacher is None:
            raise TrainError(
                "student.init teacher-layers:N needs a local teacher (hf: or gguf:)",
                hint="use student.config or student.path with an API teacher",
            )
        n = int(student_spec.init.split(":", 1)[1])
        model = student_from_teacher_layers(teacher, n)
        tokenizer = AutoTokenizer.from_pretrained(str(teacher_folder))
        description = (
            f"{student_spec.init} ({model.config.model_type}, layers "
            f"{evenly_spread(teacher.config.num_hidden_layers, n)} of the teacher)"
        )
    elif student_spec.config:
        settings = dict(student_spec.config)
        tokenizer_path = settings.pop("tokenizer", None) or teacher_folder
        if tokenizer_path is None:
            raise TrainError("student.config: name a `tokenizer` folder in the config (the teacher is not local)")
        model_type = settings.pop("model_type", None) or (
            teacher_config.model_type if teacher_config is not None else None
        )
        if model_type is None:
            raise TrainError("student.config: give model_type (e.g. llama)")
        try:
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
        except (ValueError, TypeError, KeyError) as exc:
            raise TrainError(f"student.config: not a usable transformers config: {exc}") from None
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path))
        description = f"config ({model_type}, {getattr(model.config, 'num_hidden_layers', '?')} layers)"
    else:
        folder = Path(student_spec.path).expanduser()
        if not (folder / "config.json").is_file():
            raise TrainError(
                f"student.path {folder}: no config.json there", hint="point student.path at a saved transformers folder"
            )
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        description = f"path {folder}"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    params = count_params(model)
    if student_spec.lora:
        model = apply_lora(model, encoder=student_spec.is_encoder)
        description += ", LoRA adapters"
    del teacher
    return StudentBuild(
        model, tokenizer, description, params, teacher_params, student_spec.size_max_params, student_spec.kind
    )


# --- asking the model: the answer position, the label rows of the head ------------------------------------


def label_logits(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, label_token_ids: Tensor) -> Tensor:
    """Logits of the label tokens at each row's last real position, never the full vocabulary.

    input_ids, attention_mask: [B, S] (right-padded); label_token_ids: [L]. Returns float32 [B, L].
    """
    decoder, _ = base_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, S, H]
    last = attention_mask.sum(-1).clamp_min(1) - 1  # [B]
    answer = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]
    return output_logits(model, answer, rows=label_token_ids).float()  # [B, L]


def label_scores(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, label_token_ids: Tensor | None
) -> Tensor:
    """Logits over the task's labels, float32 [B, L], for either kind of student: an encoder's classification
    head when ``label_token_ids`` is None, else a causal LM's label-word rows at the answer position."""
    if label_token_ids is None:
        return head_scores(model, input_ids, attention_mask)
    return label_logits(model, input_ids, attention_mask, label_token_ids)


def label_token_ids(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> list[int]:
    """The first token of each label word with its leading space; refuses labels that share one."""
    ids = []
    for word in words:
        pieces = tokenizer(" " + word, add_special_tokens=False).input_ids
        if not pieces:
            raise TrainError(f"task.labels: {word!r} has no tokens in the student's tokenizer")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise TrainError(
            f"task.labels: the words {', '.join(words)} share a first token in the student's tokenizer",
            hint="give each label a verbalizer (task.labels[].words) that starts differently",
        )
    return ids


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, Tensor]:
    """Right-padded ids [B, S]; long inputs lose their start, so the suffix and answer position stay."""
    tokenizer.padding_side, tokenizer.truncation_side = "right", "left"
    return tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)


# --- a trained model, for evaluation and serving ------------------------------------------------------------


def read_task(folder: Path) -> dict[str, Any]:
    """A trained folder's ``distil_task.json``; folders written before encoder students are causal LMs."""
    task_file = folder / TASK_FILE
    if not task_file.is_file():
        raise TrainError(f"{folder}: no {TASK_FILE}; not a distil student folder", hint="run `distil train` first")
    task = json.loads(task_file.read_text())
    task.setdefault("student_kind", "causal")
    return task


def load_student_model(folder: Path, task: dict[str, Any], gguf_file: str | None = None) -> PreTrainedModel:
    """The folder's model in float32 on the CPU, with the auto class of its kind, in eval mode (``gguf_file``: the
    model in that GGUF file of the folder, dequantized by transformers' GGUF loader)."""
    # slow to import; only opening a model folder pays for it
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if task["student_kind"] == "encoder" else AutoModelForCausalLM
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    return auto.from_pretrained(str(folder), dtype=torch.float32, **extra).eval()


class Predictor:
    """A trained student (or baseline) folder of either kind: ``label_distribution`` for classify, ``generate`` for
    text."""

    def __init__(self, folder: str | Path, device: str = "cpu", gguf_file: str | None = None):
        from transformers import AutoTokenizer  # slow to import; only opening a model folder pays for it

        self.folder = Path(folder)
        self.task = read_task(self.folder)
        extra = {"gguf_file": gguf_file} if gguf_file else {}  # a GGUF export: model and tokenizer from the file
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), **extra)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_student_model(self.folder, self.task, gguf_file).to(device)
        self.device = device

    @property
    def is_encoder(self) -> bool:
        return self.task["student_kind"] == "encoder"

    @property
    def labels(self) -> list[str]:
        return list(self.task.get("labels", []))

    def prompt(self, text: str) -> str:
        return self.task["prompt_template"].replace("{input}", text)

    @torch.no_grad()
    def label_distribution(self, inputs: list[str], batch_size: int = 32) -> np.ndarray:
        """Probabilities over the labels in spec order: float64 [len(inputs), L]."""
        if self.task["kind"] != "classify":
            raise TrainError(f"{self.folder}: a generate student has no label distribution")
        ids = None if self.is_encoder else torch.tensor(self.task["label_token_ids"], device=self.device)
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = encode_prompts(
                self.tokenizer, [self.prompt(t) for t in inputs[start : start + batch_size]], self.task["max_length"]
            )
            logits = label_scores(
                self.model, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), ids
            )
            out.append(torch.softmax(logits.double(), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    @torch.no_grad()
    def generate(self, inputs: list[str], max_new_tokens: int | None = None, batch_size: int = 8) -> list[str]:
        """Greedy answers (classify students answer with their most likely label's name)."""
        if self.task["kind"] == "classify":
            probs = self.label_distribution(inputs)
            return [self.labels[i] for i in probs.argmax(1)]
        limit = max_new_tokens or self.task.get("max_new_tokens", 48)
        self.tokenizer.padding_side = "left"  # generation continues from the last column
        answers: list[str] = []
        for start in range(0, len(inputs), batch_size):
            batch = self.tokenizer(
                [self.prompt(t) for t in inputs[start : start + batch_size]], return_tensors="pt", padding=True
            ).to(self.device)
            rows = decode_rows(
                self.model, batch["input_ids"], batch["attention_mask"], limit, ends=end_ids(self.tokenizer)
            )
            answers += [self.tokenizer.decode(row.ids, skip_special_tokens=True).strip() for row in rows]
        return answers


def load_predictor(folder: str | Path, device: str = "cpu", gguf_file: str | None = None) -> Predictor:
    """Open a trained model folder (``.distil/runs/<id>/student`` or ``baseline``) for prediction; ``gguf_file``:
    the GGUF file in ``folder`` (an export beside its ``distil_task.json``)."""
    return Predictor(folder, device, gguf_file)
