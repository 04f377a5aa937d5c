"""Synthetic inputs: the teacher writes new inputs from seed examples and slice descriptions.

Each synthetic slot asks for one input about a given label and with given slice values, cycling
through them so rare combinations get asked for too: in words (``chat``), or as the next item of a
list of seeds (``list``). ``munge`` makes variants of the seeds without a teacher (word dropout and
swaps), for teachers too weak to write.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from distil.data.sources import InputItem, shared_tags, tag_slices
from distil.data.tabular import munge_items, tabular_rows
from distil.spec.models import SliceRule, SliceSpec, Spec


def describe_slice_value(name: str, value: str, rule: SliceRule) -> str:
    """A plain-words description of one slice value, e.g. 'urgent in tone (words like asap, now)'."""
    if rule.keywords:
        return f"{value} in {name} (using words like {', '.join(rule.keywords[:4])})"
    if rule.min_words is not None:
        return f"{value} ({rule.min_words} words or more)"
    if rule.max_words is not None:
        return f"{value} ({rule.max_words} words or fewer)"
    return f"{value} in {name}"


@dataclass(frozen=True)
class SyntheticSlot:
    """One input the teacher is asked to write: the prompt, and the slice tags the new input inherits (the values
    all the seeds shown in the prompt share)."""

    prompt: str
    tags: dict[str, str]


def synthetic_prompts(
    spec: Spec, seeds: Sequence[InputItem], budget: int, style: str = "chat", examples_per_prompt: int = 4
) -> list[str]:
    """The prompts of :func:`synthetic_slots`."""
    return [slot.prompt for slot in synthetic_slots(spec, seeds, budget, style, examples_per_prompt)]


def synthetic_slots(
    spec: Spec, seeds: Sequence[InputItem], budget: int, style: str = "chat", examples_per_prompt: int = 4
) -> list[SyntheticSlot]:
    """One slot per synthetic input, deterministic in ``data.seed``.

    Each slot wants one label (cycling through the labels) and one value of every slice (drawn at
    random, so rare combinations get asked for too), and shows the seeds of that label that share the
    most wanted values. ``chat`` asks for the input in words, with those seeds as examples
    (instruction-following models); ``list`` writes them as the start of a list under
    ``data.synthetic_header`` and leaves the next item to the teacher (small models continue text far
    better than they follow instructions). The new input inherits the slice values all its shown seeds share.
    """
    rng = random.Random(spec.data.seed)
    labels = spec.task.label_names or [""]
    tags = {id(s): tag_slices(s.input, spec.data.slices, s.tags) for s in seeds}
    choices = {sl.name: list(sl.values) or sorted({t[sl.name] for t in tags.values()}) for sl in spec.data.slices}
    slots = []
    for slot in range(budget):
        label = labels[slot % len(labels)]
        pool = [s for s in seeds if s.label == label] or list(seeds)
        wanted = {sl.name: rng.choice(choices[sl.name]) for sl in spec.data.slices}
        shown = _closest(pool, wanted, tags, examples_per_prompt, rng)
        inherited = shared_tags(shown, spec.data.slices)
        if style == "list":
            slots.append(SyntheticSlot(_list_prompt(spec, label, shown), inherited))
            continue
        wants = [
            describe_slice_value(sl.name, wanted[sl.name], sl.values.get(wanted[sl.name], SliceRule()))
            for sl in spec.data.slices
        ]
        lines = [spec.task.instruction.strip() or "Write inputs for this task.", "", "Examples:"]
        lines += [f"- {s.input}" for s in shown]
        about = f" that belongs to '{label}'" if label else ""
        style_words = f", {'; '.join(wants)}" if wants else ""
        lines += ["", f"Write one new, different example{about}{style_words}. Reply with the example text only."]
        slots.append(SyntheticSlot("\n".join(lines), inherited))
    return slots


def _closest(
    pool: Sequence[InputItem], wanted: dict[str, str], tags: dict[int, dict[str, str]], k: int, rng: random.Random
) -> list[InputItem]:
    """``k`` seeds of ``pool``, those sharing more of the ``wanted`` slice values first (ties at random), shuffled.

    ``tags`` maps ``id(seed)`` to the seed's slice tags."""
    shuffled = list(pool)
    rng.shuffle(shuffled)

    def shared(item: InputItem) -> int:
        return sum(tags[id(item)].get(name) == value for name, value in wanted.items())

    shown = sorted(shuffled, key=shared, reverse=True)[:k]
    rng.shuffle(shown)
    return shown


def _list_prompt(spec: Spec, label: str, shown: Sequence[InputItem]) -> str:
    header = (
        spec.data.synthetic_header.replace("{label}", label)
        if label
        else spec.data.synthetic_header.replace(" {label}", "").replace("{label}", "")
    )
    return header.strip() + "\n" + "".join(f"- {' '.join(s.input.split())}\n" for s in shown) + "-"


def synthetic_style(spec: Spec, teacher: object) -> str:
    """``data.synthetic_style``, with ``auto`` resolved: list for a teacher that continues raw text, else chat."""
    if spec.data.synthetic_style != "auto":
        return spec.data.synthetic_style
    capabilities = getattr(teacher, "capabilities", None)
    return "list" if getattr(capabilities, "continuation", False) else "chat"


def clean_synthetic(text: str) -> str:
    """The first non-empty line of a teacher's answer, without list markers, labels or quotes."""
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip()
        line = re.sub(r"^(?:ticket|example|input|text)\s*:\s*", "", line, flags=re.I).strip().strip('"').strip()
        if line:
            return line
    return ""


def munge_inputs(
    seeds: Sequence[InputItem],
    budget: int,
    seed: int = 0,
    drop: float = 0.1,
    slices: Sequence[SliceSpec] = (),
) -> list[InputItem]:
    """Variants of the seeds by word dropout and one adjacent swap, each inheriting its seed's slice values
    (``slices``); labels are left to the teacher.

    Tabular seeds (JSON objects or comma-separated numbers) get real MUNGE instead (``data.tabular``).
    """
    if tabular_rows(seeds) is not None:
        return munge_items(seeds, budget, seed=seed)
    rng = random.Random(seed)
    out: list[InputItem] = []
    if not seeds:
        return out
    for _ in range(budget):
        base = rng.choice(list(seeds))
        words = base.input.split()
        kept = [w for w in words if rng.random() > drop] or words
        if len(kept) > 2:
            i = rng.randrange(len(kept) - 1)
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
        out.append(InputItem(" ".join(kept), tags=shared_tags([base], list(slices)), source="synthetic"))
    return out
