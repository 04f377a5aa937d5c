"""Train / validation / test split by groups, so no near-duplicate pair straddles two splits, and
balancing of the training split by oversampling."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

SPLITS = ("train", "validation", "test")
PROBE = "probe"  # teacher-labelled, never trained on: where `distil iterate` looks for failures
CURATED_SPLITS = (*SPLITS, PROBE)


def split_groups(groups: Sequence[int], strata: Sequence[str], fractions: dict[str, float], seed: int = 0) -> list[str]:
    """Assign each item a split; all items of a group go to the same split.

    Groups are shuffled within their stratum (the label of the group's first item), then dealt out so
    each split's share of every stratum is as close to ``fractions`` as whole groups allow. The splits
    are the keys of ``fractions`` that are in :data:`CURATED_SPLITS`, taken in that order.
    """
    names = tuple(s for s in CURATED_SPLITS if s in fractions)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for g, items in members.items():
        by_stratum[strata[items[0]]].append(g)
    rng = random.Random(seed)
    out = [""] * len(groups)
    for stratum in sorted(by_stratum):
        gs = by_stratum[stratum]
        rng.shuffle(gs)
        total = sum(len(members[g]) for g in gs)
        filled = dict.fromkeys(names, 0)
        for g in gs:
            # the split furthest below its target share takes the next group
            name = max(
                names,
                key=lambda s: (
                    (fractions[s] * total - filled[s], -names.index(s)) if fractions[s] > 0 else (float("-inf"), 0)
                ),
            )
            for i in members[g]:
                out[i] = name
            filled[name] += len(members[g])
    return out


def oversample(indices: Sequence[int], labels: Sequence[str], seed: int = 0) -> list[int]:
    """``indices`` plus repeats of rare labels' items, so every label reaches the most common one's count."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for i in indices:
        by_label[labels[i]].append(i)
    if not by_label:
        return list(indices)
    target = max(len(v) for v in by_label.values())
    rng = random.Random(seed)
    out = list(indices)
    for label in sorted(by_label):
        items = by_label[label]
        out += [rng.choice(items) for _ in range(target - len(items))]
    return out
