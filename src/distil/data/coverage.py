"""Slice coverage audit: how many curated examples each slice value has, per label, and which are starved."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from distil.data.records import Record
from distil.spec.models import SliceSpec


@dataclass
class SliceCoverage:
    slice: str
    value: str
    total: int
    per_label: dict[str, int] = field(default_factory=dict)
    starved: bool = False


def coverage(
    records: Sequence[Record], slices: Sequence[SliceSpec], labels: Sequence[str], min_per_slice: int
) -> list[SliceCoverage]:
    """One row per (slice, value) the spec declares, also for values no record has (count 0, starved), then the
    values records carry that the spec does not list (a slice read from a field)."""
    out = []
    for sl in slices:
        counts: Counter[tuple[str, str]] = Counter((r.tags.get(sl.name, ""), r.label or "") for r in records)
        carried = sorted({v for v, _ in counts if v and v not in sl.values})
        for value in [*sl.values, *carried]:
            per_label = {label: counts[(value, label)] for label in labels} if labels else {}
            total = sum(n for (v, _), n in counts.items() if v == value)
            out.append(SliceCoverage(sl.name, value, total, per_label, total < min_per_slice))
    return out


def coverage_dicts(rows: Sequence[SliceCoverage]) -> list[dict]:
    return [asdict(r) for r in rows]
