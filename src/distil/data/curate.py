"""`distil curate`: raw shards in, a curated, split dataset out, with every removal accounted for.

The recipe, in order: malformed teacher-written inputs, confidence filter, decontamination against the
gold set, the locked test split (and any held-out files), exact and near-duplicate removal (MinHash LSH,
confirmed by the exact Jaccard), optional semantic duplicates, a grouped train / validation / test /
probe split, oversampling of rare labels in train, and the slice coverage audit. Once a test split is
locked (:mod:`distil.data.evalsets`) it is kept as it is: new items go to train, validation and probe only.
Output: ``.distil/data/curated/<hash12>/{train,validation,test,probe}.parquet`` + ``report.json`` and a
``dataset.curated`` ledger row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distil.data import dedupe, evalsets
from distil.data.coverage import SliceCoverage, coverage, coverage_dicts
from distil.data.ensemble import agreement_by_slice, record_disagreement
from distil.data.filter import confidence_reasons, malformed_reasons
from distil.data.records import Record, read_records, write_records
from distil.data.sources import read_gold_inputs, read_inputs
from distil.data.split import CURATED_SPLITS, PROBE, oversample, split_groups
from distil.data.warnings import (
    TooSmall,
    Unmatched,
    as_dicts,
    note_lines,
    thin_labels,
    too_small,
    unmatched_by_rules,
    warning_lines,
)
from distil.errors import DataError
from distil.files import write_bytes_atomic, write_text_atomic
from distil.spec.io import Project
from distil.spec.models import Filters
from distil.teachers.base import sha256_json

# When two records duplicate each other, the one from the more trusted source is kept.
SOURCE_PRIORITY = {"gold": 0, "seed": 1, "traffic": 2, "targeted": 3, "synthetic": 4}


@dataclass
class CurateResult:
    dataset_hash: str
    folder: Path
    counts: dict[str, int]
    removed: dict[str, list[dict[str, Any]]]
    coverage: list[SliceCoverage]
    splits: dict[str, list[Record]] = field(default_factory=dict)
    unmatched: list[Unmatched] = field(default_factory=list)  # items no slice rule matched, per slice
    thin_labels: dict[str, int] = field(default_factory=dict)  # labels under data.filters.min_per_label
    too_small: list[TooSmall] = field(default_factory=list)  # gate thresholds the evaluation sets cannot decide
    warnings: list[str] = field(default_factory=list)  # thin labels and slices, sets too small: one line each
    notes: list[str] = field(default_factory=list)  # items no slice rule matched: one line per slice

    @property
    def starved(self) -> list[SliceCoverage]:
        return [c for c in self.coverage if c.starved]


def _removal(record: Record, reason: str) -> dict[str, Any]:
    return {"id": record.id, "input": record.input[:120], "source": record.source, "reason": reason}


def reference_texts(project: Project, heldout: Sequence[str | Path] = ()) -> list[tuple[str, str]]:
    """(text, where) of every item the training data must not contain: the gold set and held-out files."""
    refs: list[tuple[str, str]] = []
    gold = project.path(project.spec.data.gold) if project.spec.data.gold else None
    files = ([gold] if gold else []) + [Path(p) for p in heldout]
    for path in files:
        if path.suffix == ".parquet" or path.is_dir():
            refs += [(r.input, f"{path}") for r in read_records(path)]
        else:
            items = read_gold_inputs(path, project.spec) if path == gold else read_inputs(path)
            refs += [(item.input, f"{path}") for item in items]
    return refs


def disagreement_reason(record: Record, filters: Filters) -> str:
    """Why the record's teachers disagree too much for ``filters.max_teacher_disagreement`` ("" when they do not, or
    when one teacher labelled it)."""
    disagreement = record_disagreement(record)
    if filters.max_teacher_disagreement is None or disagreement is None:
        return ""
    if disagreement <= filters.max_teacher_disagreement:
        return ""
    labels = ", ".join(f"{a['teacher_id']}: {a['label']}" for a in record.teacher_answers or [])
    limit = filters.max_teacher_disagreement
    return f"teacher disagreement {disagreement:.3f} > max_teacher_disagreement {limit} ({labels})"


def split_fractions(split: dict[str, float], probe: float, test_locked: bool) -> dict[str, float]:
    """Shares of the curated pool per split. The probe pool takes ``probe`` of what is not test; with a
    locked test split nothing new goes to test, so train and validation share the rest in their ratio."""
    rest = (split["train"] + split["validation"]) or 1.0
    if test_locked:
        return {
            "train": split["train"] / rest * (1 - probe),
            "validation": split["validation"] / rest * (1 - probe),
            PROBE: probe,
        }
    return {
        "train": split["train"] * (1 - probe),
        "validation": split["validation"] * (1 - probe),
        "test": split["test"],
        PROBE: rest * probe,
    }


def curate_records(
    project: Project,
    records: Sequence[Record],
    heldout: Sequence[str | Path] = (),
    frozen_test: Sequence[Record] | None = None,
) -> CurateResult:
    """The whole recipe on ``records`` (pure except for reading the gold / held-out files).

    ``frozen_test``: the locked test split, kept as it is; its items and their near-duplicates are kept
    out of every other split.
    """
    spec = project.spec
    filters = spec.data.filters
    removed: dict[str, list[dict[str, Any]]] = {
        "malformed": [],
        "confidence": [],
        "decontamination": [],
        "exact_duplicate": [],
        "near_duplicate": [],
        "semantic_duplicate": [],
        "teacher_disagreement": [],
    }
    test_ids = {r.id for r in frozen_test or ()}
    pool = sorted(
        (r for r in records if r.id not in test_ids), key=lambda r: (SOURCE_PRIORITY.get(r.source, 9), r.created_at)
    )

    kept = []
    for record, malformed, unsure in zip(
        pool, malformed_reasons(pool, filters), confidence_reasons(pool, filters), strict=True
    ):
        if malformed:
            removed["malformed"].append(_removal(record, malformed))
        elif unsure:
            removed["confidence"].append(_removal(record, unsure))
        elif filters.disagreement_action == "drop" and (disputed := disagreement_reason(record, filters)):
            removed["teacher_disagreement"].append(_removal(record, disputed))
        else:
            kept.append(record)

    refs = reference_texts(project, heldout) + [(r.input, "locked test split") for r in frozen_test or ()]
    hits = dedupe.contaminated([r.input for r in kept], [t for t, _ in refs], filters.near_duplicate_threshold)
    survivors = []
    for record, hit in zip(kept, hits, strict=True):
        if hit is None:
            survivors.append(record)
        else:
            removed["decontamination"].append(
                _removal(record, f"near-duplicate of held-out item {refs[hit][0][:60]!r} ({refs[hit][1]})")
            )

    texts = [r.input for r in survivors]
    groups = dedupe.near_duplicate_groups(texts, filters.near_duplicate_threshold)
    unique = []
    for i, (record, group) in enumerate(zip(survivors, groups, strict=True)):
        if group == i:
            unique.append(record)
            continue
        first = survivors[group]
        exact = dedupe.normalise(record.input) == dedupe.normalise(first.input)
        kind = "exact_duplicate" if exact else "near_duplicate"
        score = 1.0 if exact else dedupe.jaccard(record.input, first.input)
        removed[kind].append(
            _removal(
                record,
                f"{'same text as' if exact else f'Jaccard {score:.2f} with'} {first.id[:19]} {first.input[:60]!r}",
            )
        )

    if filters.semantic_duplicates and len(unique) > 1:
        vectors = dedupe.embed([r.input for r in unique])
        pairs = dedupe.semantic_duplicate_pairs(vectors, filters.semantic_threshold)
        sem_groups = dedupe.groups_from_pairs(len(unique), pairs)  # only the cosine pairs link records
        semantic_kept = []
        for i, (record, group) in enumerate(zip(unique, sem_groups, strict=True)):
            if group == i:
                semantic_kept.append(record)
            else:
                removed["semantic_duplicate"].append(
                    _removal(
                        record,
                        f"cosine ≥ {filters.semantic_threshold} with {unique[group].id[:19]} "
                        f"{unique[group].input[:60]!r}",
                    )
                )
        unique = semantic_kept

    # disputed examples (disagreement_action: probe) are labelled but never trained on: the probe pool takes them
    to_probe = [r for r in unique if disagreement_reason(r, filters)]
    unique = [r for r in unique if not disagreement_reason(r, filters)]

    # Removal leaves one item per near-duplicate group; grouping again guards the split against
    # chains LSH links only through items that were removed.
    split_group_ids = dedupe.near_duplicate_groups([r.input for r in unique], filters.near_duplicate_threshold)
    labels = [r.label or "" for r in unique]
    fractions = split_fractions(spec.data.split, spec.data.probe, test_locked=frozen_test is not None)
    assignment = split_groups(split_group_ids, labels, fractions, seed=spec.data.seed)
    splits: dict[str, list[Record]] = {name: [] for name in CURATED_SPLITS}
    for record, name in zip(unique, assignment, strict=True):
        splits[name].append(replace(record, split=name))
    splits[PROBE] += [replace(r, split=PROBE) for r in to_probe]
    if frozen_test is not None:
        splits["test"] = list(frozen_test)
    curated = [r for name in CURATED_SPLITS for r in splits[name]]
    audit = coverage(curated, spec.data.slices, spec.task.label_names, filters.min_per_slice)

    oversampled = 0
    if filters.balance == "oversample" and splits["train"]:
        train = splits["train"]
        order = oversample(range(len(train)), [r.label or "" for r in train], seed=spec.data.seed)
        oversampled = len(order) - len(train)
        splits["train"] = [train[i] for i in order]

    counts = {
        "raw": len(records),
        "curated": len(curated),
        **{name: len(splits[name]) for name in CURATED_SPLITS},
        "oversampled": oversampled,
        "probe_teacher_disagreement": len(to_probe),
    }
    counts["kept_in_locked_test"] = sum(r.id in test_ids for r in records)  # raw copies of the locked test items
    counts.update({f"removed_{k}": len(v) for k, v in removed.items()})
    digest = curated_digest(splits)
    folder = curated_folder(project, digest)
    gold_file = str(project.path(spec.data.gold)) if spec.data.gold else None
    gold = sum(1 for _, where in refs if where == gold_file)
    unmatched = unmatched_by_rules(curated, spec)
    thin = thin_labels(curated, spec)
    small = too_small(spec, splits["test"], gold)
    lines = warning_lines(audit, thin, small, spec)
    return CurateResult(
        digest, folder, counts, removed, audit, splits, unmatched, thin, small, lines, note_lines(unmatched)
    )


def curate(
    project: Project, heldout: Sequence[str | Path] = (), actor: str = "", new_test_set: str = ""
) -> CurateResult:
    """Curate every raw shard; write the dataset folder and its report; record ``dataset.curated``.

    The first curate after a gate lock locks the test split (and registers the gold set); later ones keep
    it byte for byte. ``new_test_set`` (a reason) locks a new test split, allowed once per new gate version.
    """
    actor = actor or project.spec.roles.driver  # every act has an actor: curating is the driver's
    raw = project.data_dir / "raw"
    records = read_records(raw) if raw.is_dir() else []
    if not records:
        raise DataError(f"{raw}: no raw records to curate", hint="run `distil generate` first")
    plan = evalsets.plan_test_split(project, new_test_set)
    result = curate_records(project, records, heldout, frozen_test=plan.frozen)
    if not result.splits["train"]:
        raise DataError(
            "curate: every record was filtered out, so there is no training data",
            hint="lower data.filters.min_confidence / min_margin, or generate more inputs",
        )
    folder = result.folder
    for name in CURATED_SPLITS:
        if name == "test" and plan.frozen_path is not None:
            write_bytes_atomic(
                folder / "test.parquet", plan.frozen_path.read_bytes()
            )  # the locked split, byte for byte
        else:
            write_records(result.splits[name], folder / f"{name}.parquet")
    report = {
        "dataset_hash": result.dataset_hash,
        "counts": result.counts,
        "filters": project.spec.data.filters.model_dump(mode="json"),
        "removed": result.removed,
        "coverage": coverage_dicts(result.coverage),
        "starved_slices": [f"{c.slice}={c.value}" for c in result.starved],
        **({"teacher_agreement": agreement} if (agreement := agreement_by_slice(records)) else {}),
        "thin_labels": result.thin_labels,
        "unmatched_by_rules": as_dicts(result.unmatched),
        "too_small_to_decide": as_dicts(result.too_small),
        "warnings": result.warnings,
        "notes": result.notes,
        "raw_shards": sorted(p.name for p in raw.glob("*.parquet")),
        "test_split": "kept as locked"
        if plan.frozen is not None
        else ("locked by this curate" if plan.lock_version is not None else "not locked (the gate is not locked yet)"),
    }
    write_text_atomic(folder / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    if plan.lock_version is not None:
        evalsets.lock_evaluation_sets(project, folder / "test.parquet", plan.lock_version, plan.reason, actor=actor)
    latest = project.ledger.latest("datasets", "stage = ?", ("curated",))
    if latest is None or latest["dataset_hash"] != result.dataset_hash:
        removed = {k: len(v) for k, v in result.removed.items()}
        extra = {"removed": removed, "starved_slices": report["starved_slices"]}
        record_curated(project, folder, result.dataset_hash, result.counts, actor=actor, extra=extra)
    return result


def curated_digest(splits: dict[str, list[Record]]) -> str:
    """The dataset hash of curated ``splits``: each record's split, id, label and teacher answer, in split order."""
    rows = [r for name in CURATED_SPLITS for r in splits.get(name, [])]
    return sha256_json([[r.split, r.id, r.label, r.label_probs, r.teacher_text] for r in rows])


def curated_folder(project: Project, dataset_hash: str) -> Path:
    return project.data_dir / "curated" / dataset_hash.split(":")[1][:12]


def record_curated(
    project: Project,
    folder: Path,
    dataset_hash: str,
    counts: dict[str, int],
    *,
    actor: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """The ``dataset.curated`` event and its ``datasets`` row for the dataset already written in ``folder``; the
    event hashes the folder's files, so a shard changed later fails ``ledger verify``."""
    rel = str(folder.relative_to(project.root))
    row = {"dataset_hash": dataset_hash, "stage": "curated", "path": rel, "counts": counts}
    project.ledger.append(
        "dataset.curated",
        {**row, **(extra or {})},
        actor=actor or project.spec.roles.driver,
        files=[folder],
        table="datasets",
        row=row,
    )


def write_curated(project: Project, splits: dict[str, list[Record]], *, actor: str | None = None) -> str:
    """Write ready-made ``splits`` (name -> records) as a curated dataset and record it; returns its hash.

    For a dataset built outside the recipe (a benchmark's fixed splits, a test's fixture): the same folder layout
    and ledger row as `distil curate` writes, so `train`, `evaluate` and `verify` read it as they read any other.
    """
    for name, records in splits.items():
        for record in records:
            record.split = name
    dataset_hash = curated_digest(splits)
    folder = curated_folder(project, dataset_hash)
    for name, records in splits.items():
        write_records(records, folder / f"{name}.parquet")
    record_curated(project, folder, dataset_hash, {name: len(rows) for name, rows in splits.items()}, actor=actor)
    return dataset_hash
