"""Screening inputs the teacher wrote before any is labelled: what repeats the writing header, a seed, or another.

A small teacher continuing a list (``data.synthetic_style: list``) often writes the list's header back, or the
same sentence again with a word changed. Labelling those costs teacher calls and adds nothing; curation would drop
most of them later, but the round would already have reported them as new inputs. The same rules as curation
apply: the malformed filter (``data.filters.min_words``, ``min_letter_share``) and near-duplicates at
``data.filters.near_duplicate_threshold`` (MinHash candidates confirmed by exact Jaccard; see
:mod:`distil.data.dedupe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from distil.data import dedupe
from distil.data.filter import malformed_reason
from distil.data.sources import InputItem
from distil.spec.models import Spec

MALFORMED = "malformed"
HEADER = "repeats the writing header"
KNOWN = "near-duplicate of an input it was written from"
REPEAT = "near-duplicate of another new input"
MIN_HEADER_WORDS = 3


@dataclass
class Screened:
    kept: list[InputItem]
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> how many

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def writing_headers(spec: Spec) -> list[str]:
    """The lines the teacher is shown above what it writes: the list header for every label, and the instruction."""
    header = spec.data.synthetic_header
    headers = [header.replace("{label}", label) for label in spec.task.label_names] or [header]
    headers.append(header.replace(" {label}", "").replace("{label}", ""))
    if spec.task.instruction.strip():
        headers.append(spec.task.instruction.strip())
    return headers


def _repeats_a_header(text: str, headers: Sequence[str], threshold: float) -> bool:
    normalised = f" {dedupe.normalise(text)} "
    # the header with an item after it; a header of one or two words is too common a phrase to judge this way
    if any(len(h.split()) >= MIN_HEADER_WORDS and f" {h} " in normalised for h in headers):
        return True
    return dedupe.contaminated([text], list(headers), threshold)[0] is not None


def screen_written_inputs(spec: Spec, items: Sequence[InputItem], known: Sequence[str] = ()) -> Screened:
    """The new inputs worth labelling, in order, and how many were dropped for each reason: malformed, repeating the
    writing header, near-duplicating an input they were written from (``known``), or an earlier new input."""
    filters = spec.data.filters
    threshold = filters.near_duplicate_threshold
    headers = [h for h in (dedupe.normalise(x) for x in writing_headers(spec)) if h]
    dropped: dict[str, int] = {}
    survivors: list[InputItem] = []
    for item in items:
        reason = MALFORMED if malformed_reason(item.input, filters) else ""
        if not reason and _repeats_a_header(item.input, headers, threshold):
            reason = HEADER
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            survivors.append(item)
    hits = dedupe.contaminated([i.input for i in survivors], list(known), threshold)
    fresh = [item for item, hit in zip(survivors, hits, strict=True) if hit is None]
    if len(fresh) < len(survivors):
        dropped[KNOWN] = len(survivors) - len(fresh)
    groups = dedupe.near_duplicate_groups([i.input for i in fresh], threshold)
    kept = [item for i, (item, group) in enumerate(zip(fresh, groups, strict=True)) if group == i]
    if len(kept) < len(fresh):
        dropped[REPEAT] = len(fresh) - len(kept)
    return Screened(kept, dropped)
