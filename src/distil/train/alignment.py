"""Token alignment across two tokenizers by character offsets, so matched positions carry the same text.

Both tokenizers read the same answer text. Each token ends at a character offset; a place where a token of the
student *and* a token of the teacher end is a boundary both agree on, and the tokens between two such
boundaries form one group on each side (one token each where the tokenizers split alike, several where one
splits finer). Cross-tokenizer losses compare one group with the other, never a student id with a teacher id.

This is the alignment TRL's GOLD trainer walks with two pointers; here each side's ends are a set and the groups
fall out of their intersection. A character split over several byte-level tokens (an accented letter, an emoji)
stays inside one group: its tokens share the character's end, and a token joins the group of the first shared
boundary at or after its end.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from distil.errors import TrainError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

UNALIGNED = -1  # a token after the last boundary both sides reach (one side was cut shorter)


def token_ends(tokenizer: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[int]]:
    """``text``'s token ids (no special tokens) and where each token ends in ``text`` (a character offset),
    made non-decreasing: a token with an empty span (a bare word mark) ends where the one before it did."""
    if not getattr(tokenizer, "is_fast", False):
        raise TrainError(
            f"the {type(tokenizer).__name__} tokenizer gives no character offsets; cross-tokenizer distillation "
            "aligns tokens by them",
            hint="save the model with a fast (tokenizers-backed) tokenizer, tokenizer.json",
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends, last = [], 0
    for _, end in encoded["offset_mapping"]:
        last = max(last, int(end))
        ends.append(last)
    return list(encoded["input_ids"]), ends


def text_groups(student_ends: Sequence[int], teacher_ends: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The group of every token on each side: group g holds the tokens ending after the g-th shared boundary and
    at or before the (g+1)-th; ``UNALIGNED`` past the last shared boundary. Returns (student [N], teacher [M])
    int64, each non-decreasing apart from the trailing ``UNALIGNED`` run; groups 0..G-1 appear on both sides."""
    shared = sorted(set(student_ends) & set(teacher_ends))

    def groups(ends: Sequence[int]) -> np.ndarray:
        out = np.full(len(ends), UNALIGNED, dtype=np.int64)
        for i, end in enumerate(ends):
            if shared and end <= shared[-1]:
                out[i] = bisect_left(shared, end)
        return out

    return groups(student_ends), groups(teacher_ends)


def answer_with_ends(
    tokenizer: PreTrainedTokenizerBase, text: str, limit: int | None = None
) -> tuple[list[int], list[int]]:
    """The answer as training reads it (``text``'s tokens then EOS, at most ``limit``) with each token's end; EOS
    ends one past the text, so the two sides' EOS tokens form a group of their own."""
    ids, ends = token_ends(tokenizer, text)
    ids, ends = ids + [tokenizer.eos_token_id], ends + [len(text) + 1]
    if limit is not None:
        ids, ends = ids[:limit], ends[:limit]
    return ids, ends
