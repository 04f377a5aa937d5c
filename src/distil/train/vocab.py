"""Whether teacher and student tokenizers agree id for id: token-level losses compare distributions by id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distil.errors import TrainError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def same_vocabulary(
    teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase
) -> tuple[bool, str]:
    """Token-level losses compare distributions id by id: both tokenizers must map the same strings to the same ids."""
    a, b = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if len(a) != len(b):
        return False, f"vocabulary sizes differ (teacher {len(a):,}, student {len(b):,})"
    differing = sum(1 for token, i in a.items() if b.get(token) != i)
    if differing:
        return False, f"{differing:,} of {len(a):,} tokens have different ids"
    return True, ""


def require_same_vocabulary(
    teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase, what: str = "logit losses"
) -> None:
    ok, why = same_vocabulary(teacher_tokenizer, student_tokenizer)
    if not ok:
        raise TrainError(
            f"teacher and student tokenizers differ ({why}): {what} compare token ids and are refused",
            hint="set train.distillation.alpha: 1.0 for sequence-level KD (cross-entropy on the teacher's text), "
            "which stays allowed, or use student.init teacher-layers:N so the student shares the teacher's tokenizer",
        )
