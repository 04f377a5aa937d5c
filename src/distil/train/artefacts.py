"""What training leaves on disk: the model folders, the checkpoints a run resumes from, its JSON files.

Every write goes through :mod:`distil.files`, so a reader (or a crash) sees a whole folder or file or
the previous one. A checkpoint holds tensors and plain values only, and is read back with
``torch.load(weights_only=True)``: a crafted ``state.pt`` cannot run code when a run resumes.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distil.errors import TrainError
from distil.files import replace_dir_atomic, write_json_atomic
from distil.train.extras import PROJECTOR
from distil.train.students import TASK_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"


def save_model_folder(
    target: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task_info: dict[str, Any]
) -> None:
    """A plain transformers folder (LoRA merged in, no training-only modules) plus ``distil_task.json``."""
    if hasattr(model, PROJECTOR):
        model = copy.deepcopy(model)
        delattr(model, PROJECTOR)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / TASK_FILE, task_info)

    replace_dir_atomic(target, write)


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
) -> None:
    """``state.pt`` (weights, optimiser, scheduler, RNG, the best evaluation's weights) and ``progress.json``."""

    def write(tmp: Path) -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "best": best_state,
            },
            tmp / STATE_FILE,
        )
        write_json_atomic(tmp / PROGRESS_FILE, progress)

    replace_dir_atomic(folder, write)


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The tensors and plain values of a checkpoint; anything else (a pickled callable, a class) is refused unread."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text advises loading unsafely and carries terminal escapes: keep only what it refused
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        reason = f" (it asks to import {found.group(1)})" if found else ""
        raise TrainError(
            f"{path}: refused: the checkpoint holds more than tensors and plain values{reason}",
            hint=f"delete {path.parent} to train that model from the start",
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise TrainError(
            f"{path}: not a readable checkpoint ({exc})",
            hint=f"delete {path.parent} to train that model from the start",
        ) from None


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore ``model``, ``optimizer``, ``scheduler`` and the RNG from ``folder``; returns (progress, best weights)."""
    saved = read_checkpoint_state(folder / STATE_FILE)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / PROGRESS_FILE).read_text()), saved["best"]


def write_run_file(path: Path, value: Any) -> None:
    """A run's JSON file (train_config, curve, metrics), written atomically."""
    write_json_atomic(path, value)
