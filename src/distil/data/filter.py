"""Curation filters on single records: inputs the teacher wrote that are not text of the task's kind
(too few words, mostly digits and punctuation), and answers the teacher was unsure of (max
probability, margin, entropy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from distil.data.records import Record
from distil.spec.models import Filters
from distil.teachers.base import label_stats


def confidence_reasons(records: Sequence[Record], filters: Filters) -> list[str]:
    """Per record, why it fails the confidence filter ("" when it passes).

    Classify records are judged on their label distribution; text records on ``confidence`` (mean
    token probability) against ``min_confidence``. A record with no teacher answer always fails.
    """
    out = []
    for r in records:
        if r.label_probs:
            top, margin, entropy = (float(x[0]) for x in label_stats(np.asarray([r.label_probs])))
            if top < filters.min_confidence:
                out.append(f"max probability {top:.3f} < min_confidence {filters.min_confidence}")
            elif margin < filters.min_margin:
                out.append(f"margin {margin:.3f} < min_margin {filters.min_margin}")
            elif filters.max_entropy is not None and entropy > filters.max_entropy:
                out.append(f"entropy {entropy:.3f} > max_entropy {filters.max_entropy}")
            else:
                out.append("")
        elif r.teacher_text:
            conf = r.confidence
            out.append(
                f"confidence {conf:.3f} < min_confidence {filters.min_confidence}"
                if conf is not None and conf < filters.min_confidence
                else ""
            )
        else:
            out.append("no teacher answer")
    return out


WRITTEN_BY_TEACHER = ("synthetic", "targeted")


def letter_share(text: str) -> float:
    """Letters over non-space characters (1.0 for an empty text)."""
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 1.0


def malformed_reason(text: str, filters: Filters) -> str:
    """Why a teacher-written input does not look like an input at all ("" when it does)."""
    words, share = len(text.split()), letter_share(text)
    if words < filters.min_words:
        return f"{words} words < min_words {filters.min_words}"
    if share < filters.min_letter_share:
        return f"letters {share:.2f} of the characters < min_letter_share {filters.min_letter_share}"
    return ""


def malformed_reasons(records: Sequence[Record], filters: Filters) -> list[str]:
    """Per record, :func:`malformed_reason` of a teacher-written input ("" when it passes).

    Only synthetic and targeted inputs are judged: seeds, traffic and gold are what users wrote."""
    return [malformed_reason(r.input, filters) if r.source in WRITTEN_BY_TEACHER else "" for r in records]
