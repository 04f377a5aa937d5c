"""What `distil curate` warns about before anything is trained: labels and slice values thinner than the spec's
minimum, items no slice rule matched (a catch-all value taking them), and evaluation sets too small to decide
the gate at its thresholds — the `undecided` of `distil decide`, foreseen.

Pure functions of the curated splits and the spec; each warning is one line a person can act on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from distil.data.coverage import SliceCoverage
from distil.data.records import Record
from distil.data.sources import matching_value
from distil.evaluate.metrics import wilson_interval, wilson_items_needed
from distil.spec.models import Spec

# McNemar's exact one-sided test needs this many discordant items, all won by the student, for p < 0.05.
MCNEMAR_MIN_DISCORDANT = 5


@dataclass(frozen=True)
class Unmatched:
    """Curated items of one rule-based slice whose text no rule of it matches, by the value they carry."""

    slice: str
    n: int
    of: int
    values: dict[str, int]
    catch_all: str  # the value given when nothing decides


@dataclass(frozen=True)
class TooSmall:
    """An evaluation set too small for one gate threshold to pass even on a perfect result."""

    threshold: str
    limit: float
    evaluated_on: str  # "test split", "test split, slice tone=urgent"
    n: int
    items_needed: int | None  # at a perfect result; None: more than can be gathered
    best_lower_bound: float | None  # the 95% lower bound at a perfect result on n items


def unmatched_by_rules(records: Sequence[Record], spec: Spec) -> list[Unmatched]:
    """For each slice with rules, the curated items no rule matches (they carry a tag, or fell to the catch-all)."""
    out = []
    for sl in spec.data.slices:
        if not any(not rule.is_catch_all for rule in sl.values.values()):
            continue  # a slice read from a field (or of catch-alls only) has no rules to match
        missed = [r for r in records if matching_value(sl, r.input) is None]
        if missed:
            values = Counter(r.tags.get(sl.name, sl.fallback) for r in missed)
            out.append(Unmatched(sl.name, len(missed), len(records), dict(values.most_common()), sl.fallback))
    return out


def thin_labels(records: Sequence[Record], spec: Spec) -> dict[str, int]:
    """Task labels with fewer curated items (by the teacher's label) than ``data.filters.min_per_label``."""
    if spec.task.kind != "classify":
        return {}
    counts = Counter(r.label for r in records)
    floor = spec.data.filters.min_per_label
    return {label: counts.get(label, 0) for label in spec.task.label_names if counts.get(label, 0) < floor}


def too_small(spec: Spec, test: Sequence[Record], gold: int) -> list[TooSmall]:
    """Gate thresholds the evaluation sets cannot pass even if the student agreed with the teacher on every item.

    Rates pass on the lower bound of their Wilson 95% interval (see :mod:`distil.decide`), so a threshold t
    needs at least ``wilson_items_needed(1.0, t)`` items at a perfect result; more at any real one."""
    gate, out = spec.gate, []

    def check(threshold: str, limit: float, where: str, n: int) -> None:
        needed = wilson_items_needed(1.0, limit, "min")
        if needed is None or n < needed:
            best = wilson_interval(n, n)[0] if n else None
            out.append(TooSmall(threshold, limit, where, n, needed, best))

    if gate.fidelity_min is not None:
        check("fidelity_min", gate.fidelity_min, "test split", len(test))
    if gate.per_slice_fidelity_min is not None:
        for sl in spec.data.slices:
            counts = Counter(r.tags.get(sl.name) for r in test)
            for value in sorted({*sl.values, *(v for v in counts if v is not None)}):
                check(
                    "per_slice_fidelity_min",
                    gate.per_slice_fidelity_min,
                    f"test slice {sl.name}={value}",
                    counts.get(value, 0),
                )
    if gate.beat_baseline and len(test) < MCNEMAR_MIN_DISCORDANT:
        out.append(TooSmall("beat_baseline", 0.05, "test split", len(test), MCNEMAR_MIN_DISCORDANT, None))
    if gate.quality_min_vs_teacher is not None and spec.data.gold and gold == 0:
        out.append(TooSmall("quality_min_vs_teacher", gate.quality_min_vs_teacher, "gold set", 0, None, None))
    return out


def note_lines(unmatched: Sequence[Unmatched]) -> list[str]:
    """Items no rule of a slice matched, by the value they carry: with a catch-all, usually most of them."""
    lines = []
    for u in unmatched:
        carried = ", ".join(f"{value} {n}" for value, n in u.values.items())
        lines.append(
            f"slice {u.slice}: {u.n} of {u.of} curated items match none of its rules; they carry {carried} (a tag "
            f"of their own, or the catch-all {u.catch_all!r}); if that is too many, widen the rules"
        )
    return lines


def warning_lines(
    coverage: Sequence[SliceCoverage], thin: Mapping[str, int], small: Sequence[TooSmall], spec: Spec
) -> list[str]:
    """Each finding as one line: what, how many, and what to change."""
    filters = spec.data.filters
    lines = [
        f"label {label}: {n} curated item(s), under data.filters.min_per_label {filters.min_per_label}; add seeds "
        f"of it, or raise data.synthetic_budget"
        for label, n in thin.items()
    ]
    lines += [
        f"slice {c.slice}={c.value}: {c.total} curated item(s), under data.filters.min_per_slice "
        f"{filters.min_per_slice}; its figures will rest on few items"
        for c in coverage
        if c.starved
    ]
    for s in small:
        if s.threshold == "beat_baseline":
            lines.append(
                f"beat_baseline: the {s.evaluated_on} has {s.n} item(s); McNemar needs at least "
                f"{MCNEMAR_MIN_DISCORDANT} won by the student alone, so it stays undecided; raise data.split.test"
            )
        elif s.n == 0:
            lines.append(f"{s.threshold} {s.limit:g}: the {s.evaluated_on} has no items, so the gate cannot check it")
        else:
            need = f"{s.items_needed} would" if s.items_needed else "no realistic number would"
            lines.append(
                f"{s.threshold} {s.limit:g}: the {s.evaluated_on} has {s.n} item(s); even at 100% agreement the 95% "
                f"lower bound is {s.best_lower_bound:.2f}, so it can only be undecided or FAIL ({need} decide it); "
                "raise data.split.test or the data"
            )
    return lines


def as_dicts(items: Sequence[Unmatched] | Sequence[TooSmall]) -> list[dict]:
    return [asdict(item) for item in items]
