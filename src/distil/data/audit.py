"""`distil check` on the data files the spec names: each file read the way the cadence reads it (every bad
line a DataError naming the file, the line, the columns found and the fix), then counted per label and per
slice value, with its duplicates, so a thin label or a leaking gold item is seen before any teacher call."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distil.data.dedupe import normalise
from distil.data.sources import InputItem, read_gold_inputs, read_seed_inputs, tag_slices
from distil.errors import DataError
from distil.spec.io import Project
from distil.spec.models import Spec

UNLABELLED = "(no label)"


@dataclass
class FileAudit:
    field: str  # the spec field naming the file, e.g. data.seeds
    path: Path
    items: int
    per_label: dict[str, int]  # every task label (0 when absent), then UNLABELLED when some lines have none
    per_slice: dict[str, dict[str, int]]  # slice -> value -> items
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, the earlier line it repeats)
    warnings: list[str] = field(default_factory=list)


def data_files(project: Project) -> list[tuple[str, Path]]:
    """(spec field, path) of every data file the spec names."""
    spec = project.spec.data
    files = [("data.seeds", project.path(spec.seeds))]
    if spec.gold:
        files.append(("data.gold", project.path(spec.gold)))
    return files


def audit_data_files(project: Project) -> list[FileAudit]:
    """Read and count every data file the spec names; DataError on the first line that cannot be used."""
    spec = project.spec
    audits, read = [], {}
    for name, path in data_files(project):
        read[name] = read_gold_inputs(path, spec) if name == "data.gold" else read_seed_inputs(path, spec)
        audits.append(audit_items(spec, name, path, read[name]))
    if "data.gold" in read:
        audits[-1].warnings += leaks(read["data.seeds"], read["data.gold"])
    return audits


def audit_items(spec: Spec, name: str, path: Path, items: list[InputItem]) -> FileAudit:
    """Counts, duplicates and warnings of one file's items (pure)."""
    classify = spec.task.kind == "classify"
    labels = Counter(item.label or UNLABELLED for item in items)
    per_label = {label: labels.get(label, 0) for label in spec.task.label_names} if classify else {}
    if classify and labels.get(UNLABELLED):
        per_label[UNLABELLED] = labels[UNLABELLED]
    per_slice = {}
    for sl in spec.data.slices:
        values = Counter(tag_slices(item.input, [sl], item.tags)[sl.name] for item in items)
        if sl.from_field and sl.values:
            unknown = sorted(set(values) - set(sl.values))
            if unknown:
                where = next(i for i in items if i.tags.get(sl.name) in unknown)
                raise DataError(
                    f"{path}:{where.line}: slice {sl.name!r} value {where.tags[sl.name]!r} (column `{sl.from_field}`) "
                    f"is not one of data.slices[{sl.name}].values ({', '.join(sl.values)}); add it there, or fix the "
                    "line"
                )
        per_slice[sl.name] = {value: values.get(value, 0) for value in sl.values} | dict(sorted(values.items()))
    audit = FileAudit(name, path, len(items), per_label, per_slice, duplicates(items))
    audit.warnings = file_warnings(spec, audit)
    return audit


def duplicates(items: list[InputItem]) -> list[tuple[int, int]]:
    """(line, first line with the same text) for each repeated input, texts compared as curate compares them."""
    first: dict[str, int] = {}
    out = []
    for item in items:
        key = normalise(item.input)
        if key in first:
            out.append((item.line or 0, first[key]))
        else:
            first[key] = item.line or 0
    return out


def file_warnings(spec: Spec, audit: FileAudit) -> list[str]:
    """What will weaken the run without stopping it: missing labels, thin labels and slice values, repeats."""
    out = []
    where = f"{audit.field} ({audit.path.name})"
    if spec.task.kind == "classify":
        labelled = audit.items - audit.per_label.get(UNLABELLED, 0)
        if audit.field == "data.seeds" and labelled == 0:
            out.append(
                f"{where}: no line has a label in column `{spec.data.fields.label}`; few-shot prompts and synthetic "
                "inputs need labelled seeds (map the label's column with data.fields.label)"
            )
        else:
            thin = [
                f"{label} {n}"
                for label, n in audit.per_label.items()
                if label != UNLABELLED and n < max(1, spec.task.few_shot.per_label)
            ]
            if thin:
                out.append(
                    f"{where}: labels with fewer than {max(1, spec.task.few_shot.per_label)} item(s): {', '.join(thin)}"
                )
    empty = [f"{name}={value}" for name, values in audit.per_slice.items() for value, n in values.items() if n == 0]
    if empty:
        out.append(f"{where}: slice values no item has: {', '.join(empty)}")
    if audit.duplicates:
        shown = ", ".join(f"line {line} repeats line {earlier}" for line, earlier in audit.duplicates[:3])
        more = f" (and {len(audit.duplicates) - 3} more)" if len(audit.duplicates) > 3 else ""
        out.append(f"{where}: {len(audit.duplicates)} repeated input(s), curate keeps one of each: {shown}{more}")
    return out


def leaks(seeds: list[InputItem], gold: list[InputItem]) -> list[str]:
    """Gold items that are also seeds: curate drops those seeds (nothing trained on may be in gold)."""
    seed_lines = {normalise(item.input): item.line for item in seeds}
    shared = [(item.line, seed_lines[normalise(item.input)]) for item in gold if normalise(item.input) in seed_lines]
    if not shared:
        return []
    shown = ", ".join(f"gold line {g} is seed line {s}" for g, s in shared[:3])
    return [f"data.gold: {len(shared)} item(s) are also seeds; curate drops those seeds: {shown}"]
