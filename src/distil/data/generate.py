"""`distil generate`: collect inputs (seeds, synthetic, traffic), have the teacher label each one, and
write immutable raw shards with provenance.

Every teacher call goes through the on-disk call cache first; results are stored batch by batch, so
an interrupted run resumes where it stopped and calls the teacher once per item in all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.data.cache import CallCache, call_key
from distil.data.ensemble import combined_records
from distil.data.records import Record, now_iso, write_records
from distil.data.sources import InputItem, read_seed_inputs, read_traffic, tag_slices
from distil.data.synthetic import clean_synthetic, munge_inputs, synthetic_slots, synthetic_style
from distil.ledger.store import sha256_file
from distil.spec.gate import require_locked_gate, require_unchanged_gate
from distil.spec.io import Project
from distil.teachers.base import CalibratedTeacher, Teacher, sha256_json
from distil.teachers.registry import build_teacher

Progress = Callable[[int], None]  # called with the number of items just finished


def call_cache(project: Project) -> CallCache:
    return CallCache(project.state_dir / "cache" / "teacher_calls.sqlite")


def _chunks(items: Sequence[Any], size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _prime_calibration(teacher: Teacher, cache: CallCache) -> None:
    """Load (or compute once and store) the content-free distribution, so resumes do not recompute it."""
    if not isinstance(teacher, CalibratedTeacher) or not getattr(teacher.task, "calibrate", False):
        return
    key = call_key(teacher.fingerprint, "content-free:" + teacher.prompt_hash, teacher.params)
    found = cache.get_many([key])
    if key in found:
        teacher.use_content_free(np.asarray(found[key]))
    else:
        cache.put_many({key: teacher.content_free_distribution().tolist()})


def chunk_size(teacher: Teacher, batch_size: int) -> int:
    """Items per teacher call: ``batch_size`` for a local model's forward pass; for an API teacher, twice its
    ``max_in_flight`` so its concurrency is really used (each chunk's answers are cached as soon as it ends)."""
    return max(batch_size, 2 * int(getattr(teacher, "max_in_flight", 0)))


def label_items(
    project: Project,
    teacher: Teacher,
    items: Sequence[InputItem],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[Record]:
    """One Record per item, labelled by ``teacher`` (cached calls are reused, new ones cached per batch)."""
    spec = project.spec
    cache = call_cache(project)
    classify = spec.task.kind == "classify"
    params = dict(teacher.params)
    prompts = [teacher.classify_prompt(item.input) for item in items]
    keys = [call_key(teacher.fingerprint, p, params) for p in prompts]
    answers = cache.get_many(keys)
    if progress:
        progress(sum(1 for k in keys if k in answers))
    todo = [i for i, k in enumerate(keys) if k not in answers]
    todo = list({keys[i]: i for i in reversed(todo)}.values())[::-1]  # one call per distinct prompt
    if todo and classify:
        _prime_calibration(teacher, cache)
    cost = float(getattr(teacher, "cost_per_call", 0.0))
    for chunk in _chunks(todo, chunk_size(teacher, batch_size)):
        stamp = now_iso()
        if classify:
            probs = teacher.label_distribution([items[i].input for i in chunk])
            fresh = {
                keys[i]: {"label_probs": probs[j].tolist(), "created_at": stamp, "cost": cost}
                for j, i in enumerate(chunk)
            }
        else:
            topk = min(getattr(teacher.capabilities, "topk", 0), 20)
            outs = teacher.generate_detailed(
                [prompts[i] for i in chunk], max_new_tokens=spec.task.max_new_tokens, topk=topk
            )
            fresh = {keys[i]: {**out, "created_at": stamp, "cost": cost} for i, out in zip(chunk, outs, strict=True)}
        cache.put_many(fresh)
        answers.update(fresh)
        if progress:
            progress(sum(1 for k in keys if k in fresh))
    rationales = _rationales(project, teacher, items, answers, keys, cache) if classify and spec.data.rationales else {}
    return [
        _record(project, teacher, item, answers[key], params, rationales.get(key))
        for item, key in zip(items, keys, strict=True)
    ]


def labelling_teachers(project: Project, teacher: Teacher | None = None, actor: str = "") -> list[Teacher]:
    """The teachers that label (``data.teachers``, else the first teacher), each built, so its licence is checked,
    before any of them is called; ``teacher``, when given, stands for the first."""
    specs = project.spec.labelling_teachers()
    first = teacher or build_teacher(project, specs[0], actor=actor)
    return [first] + [build_teacher(project, s, actor=actor) for s in specs[1:]]


def label_with_teachers(
    project: Project,
    teachers: Sequence[Teacher],
    items: Sequence[InputItem],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[Record]:
    """:func:`label_items` by each teacher; with several, one record per item with their distributions combined
    (``data.combine``, ``teachers[].weight``) and each teacher's answer kept (:mod:`distil.data.ensemble`)."""
    spec = project.spec
    per_teacher = [label_items(project, t, items, batch_size, progress) for t in teachers]
    if len(per_teacher) == 1:
        return per_teacher[0]
    weights = [spec.teacher(t.teacher_id).weight for t in teachers]
    return combined_records(per_teacher, weights, spec.data.combine, spec.task.label_names)


def _rationales(
    project: Project,
    teacher: Teacher,
    items: Sequence[InputItem],
    answers: dict[str, Any],
    keys: list[str],
    cache: CallCache,
) -> dict[str, str]:
    """One short explanation per labelled item, asked of the teacher and cached like any call."""
    names = project.spec.task.label_names
    asks = {}
    for item, key in zip(items, keys, strict=True):
        label = names[int(np.argmax(answers[key]["label_probs"]))]
        prompt = (
            f"{project.spec.task.instruction}\n\nInput: {item.input}\nLabel: {label}\n\nIn one sentence, why does "
            "this input get this label?"
        )
        asks[key] = (prompt, call_key(teacher.fingerprint, prompt, {"method": "rationale", "max_new_tokens": 48}))
    found = cache.get_many(k for _, k in asks.values())
    missing = [(key, prompt, rkey) for key, (prompt, rkey) in asks.items() if rkey not in found]
    for chunk in _chunks(missing, chunk_size(teacher, 16)):
        texts = teacher.generate([p for _, p, _ in chunk], max_new_tokens=48)
        fresh = {rkey: text for (_, _, rkey), text in zip(chunk, texts, strict=True)}
        cache.put_many(fresh)
        found.update(fresh)
    return {key: found[rkey] for key, (_, rkey) in asks.items()}


def _record(
    project: Project,
    teacher: Teacher,
    item: InputItem,
    answer: dict[str, Any],
    params: dict[str, Any],
    rationale: str | None,
) -> Record:
    spec = project.spec
    common = {
        "input": item.input,
        "source": item.source,
        "tags": tag_slices(item.input, spec.data.slices, item.tags),
        "gold_label": item.label,
        "rationale": rationale,
        "teacher_id": teacher.teacher_id,
        "teacher_fingerprint": teacher.fingerprint,
        "prompt_hash": teacher.prompt_hash,
        "params_hash": sha256_json(params),
        "created_at": answer.get("created_at") or now_iso(),
        "cost": float(answer.get("cost") or 0.0),
    }
    if spec.task.kind == "classify":
        probs = np.asarray(answer["label_probs"], dtype=np.float64)
        return Record(
            label=spec.task.label_names[int(np.argmax(probs))],
            label_probs=probs.tolist(),
            confidence=float(probs.max()),
            **common,
        )
    return Record(
        teacher_text=answer.get("text", ""),
        topk_ids=answer.get("topk_ids"),
        topk_logprobs=answer.get("topk_logprobs"),
        topk_tokens=answer.get("topk_tokens"),
        confidence=answer.get("confidence"),
        **common,
    )


def write_raw_shard(project: Project, records: Sequence[Record], source: str) -> Path:
    """Write records to ``.distil/data/raw/<source>-<hash12>.parquet`` (same content, same name)."""
    digest = sha256_json([[r.id, r.label_probs, r.teacher_text, r.teacher_fingerprint, r.created_at] for r in records])
    path = project.data_dir / "raw" / f"{source}-{digest.split(':')[1][:12]}.parquet"
    if not path.exists():
        write_records(records, path)
    return path


# --- inputs ----------------------------------------------------------------------------------------


def synthetic_items(
    project: Project,
    teacher: Teacher,
    seeds: Sequence[InputItem],
    budget: int,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[InputItem]:
    """``budget`` new inputs written by the teacher (or munged from the seeds), each call cached."""
    spec = project.spec
    if budget <= 0 or spec.data.synthetic == "none" or not seeds:
        return []
    if spec.data.synthetic == "munge":
        items = munge_inputs(seeds, budget, seed=spec.data.seed, slices=spec.data.slices)
    else:
        cache = call_cache(project)
        style = synthetic_style(spec, teacher)
        slots = synthetic_slots(spec, seeds, budget, style=style)
        prompts = [slot.prompt for slot in slots]
        # a list prompt is continued as raw text up to the end of its line; a chat prompt is answered
        asked: dict[str, Any] = {"chat": False, "stop": "\n"} if style == "list" else {}
        if getattr(teacher, "write_dtype", None):
            asked["dtype"] = teacher.write_dtype
        keys = [
            call_key(
                teacher.fingerprint,
                p,
                {"method": "synthetic", "slot": n, "temperature": 0.8, "seed": spec.data.seed, **asked},
            )
            for n, p in enumerate(prompts)
        ]
        found = cache.get_many(keys)
        missing = [n for n, k in enumerate(keys) if k not in found]
        if progress:
            progress(budget - len(missing))
        for chunk in _chunks(missing, chunk_size(teacher, batch_size)):
            texts = teacher.generate(
                [prompts[n] for n in chunk], max_new_tokens=64, temperature=0.8, seed=spec.data.seed + chunk[0], **asked
            )
            fresh = {keys[n]: text for n, text in zip(chunk, texts, strict=True)}
            cache.put_many(fresh)
            found.update(fresh)
            if progress:
                progress(len(chunk))
        # each new input carries the slice values of the seeds it was written from
        items = [
            InputItem(clean_synthetic(found[k]), tags=dict(slot.tags), source="synthetic")
            for k, slot in zip(keys, slots, strict=True)
        ]
    known = {s.input for s in seeds}
    unique: dict[str, InputItem] = {}
    for item in items:
        if item.input and item.input not in known:
            unique.setdefault(item.input, item)
    return list(unique.values())


@dataclass
class GenerateResult:
    shards: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dataset_hash: str = ""
    records: list[Record] = field(default_factory=list)


def _record_dataset(
    project: Project,
    shards: list[Path],
    counts: dict[str, int],
    teachers: Sequence[Teacher],
    actor: str,
    extra: dict[str, Any] | None = None,
) -> str:
    dataset_hash = sha256_json(sorted(sha256_file(p) for p in shards))
    rel = [str(p.relative_to(project.root)) for p in shards]
    payload = {
        "dataset_hash": dataset_hash,
        "stage": "raw",
        "shards": rel,
        "counts": counts,
        "teacher_id": teachers[0].teacher_id,
        "teacher_fingerprint": teachers[0].fingerprint,
        **(
            {"teachers": [{"id": t.teacher_id, "fingerprint": t.fingerprint} for t in teachers]}
            if len(teachers) > 1
            else {}
        ),
        **(extra or {}),
    }
    project.ledger.append(
        "dataset.generated",
        payload,
        actor=actor,
        files=shards,
        table="datasets",
        row={"dataset_hash": dataset_hash, "stage": "raw", "path": str(Path(".distil/data/raw")), "counts": counts},
    )
    return dataset_hash


def generate_dataset(
    project: Project,
    teacher: Teacher | None = None,
    traffic: str | Path | None = None,
    since: str | None = None,
    synthetic_budget: int | None = None,
    actor: str = "",
    show_progress: bool = True,
    batch_size: int = 16,
) -> GenerateResult:
    """Read the seeds (and a traffic log), write synthetic inputs, label everything, write raw shards."""
    spec = project.spec
    actor = actor or spec.roles.driver  # every act has an actor: building the data is the driver's
    require_locked_gate(project)  # no teacher call, no data, before the sponsor has locked the gate
    require_unchanged_gate(project)  # ... and the data is built for the gate as locked
    seeds = read_seed_inputs(project.path(spec.data.seeds), spec)
    teachers = labelling_teachers(project, teacher, actor)  # gate lock and every licence checked before any call
    teacher = teachers[0]  # the first one writes the synthetic inputs
    budget = spec.data.synthetic_budget if synthetic_budget is None else synthetic_budget
    traffic_items = read_traffic(traffic, since) if traffic else []
    with _progress_bar(show_progress) as bar:
        task = bar.add_task("synthetic inputs", total=budget if spec.data.synthetic == "teacher" else 0)
        synthetic = synthetic_items(project, teacher, seeds, budget, batch_size, lambda n: bar.advance(task, n))
        groups = {"seed": seeds, "synthetic": synthetic, "traffic": traffic_items}
        result = GenerateResult()
        for source, items in groups.items():
            if not items:
                continue
            task = bar.add_task(f"labelling {source}", total=len(items) * len(teachers))
            records = label_with_teachers(project, teachers, items, batch_size, lambda n, t=task: bar.advance(t, n))
            result.shards.append(write_raw_shard(project, records, source))
            result.counts[source] = len(records)
            result.records.extend(records)
    if result.shards:
        result.dataset_hash = _record_dataset(project, result.shards, result.counts, teachers, actor)
    return result


def label_new_inputs(
    project: Project,
    texts: Sequence[str],
    source: str = "targeted",
    tags: Sequence[dict[str, str]] | None = None,
    teacher: Teacher | None = None,
    actor: str = "",
    show_progress: bool = False,
) -> tuple[list[Record], Path | None]:
    """Label new inputs (e.g. targeted ones from `distil iterate`) and write them as one raw shard.

    Returns the records and the shard path (None when ``texts`` is empty); records a
    ``dataset.generated`` ledger row so `distil curate` and the audit trail see them.
    """
    if not texts:
        return [], None
    actor = actor or project.spec.roles.driver
    teachers = labelling_teachers(project, teacher, actor)
    items = [
        InputItem(t.strip(), tags=dict(tags[i]) if tags else {}, source=source)
        for i, t in enumerate(texts)
        if t.strip()
    ]
    with _progress_bar(show_progress) as bar:
        task = bar.add_task(f"labelling {source}", total=len(items) * len(teachers))
        records = label_with_teachers(project, teachers, items, progress=lambda n: bar.advance(task, n))
    shard = write_raw_shard(project, records, source)
    _record_dataset(project, [shard], {source: len(records)}, teachers, actor)
    return records, shard


def _progress_bar(show: bool):
    """A bar in a terminal; a plain line every few seconds in a log (see :func:`distil.console.progress`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from distil.console import progress

    class _Rate(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task):  # noqa: ANN001, ANN201 - rich's column protocol
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} items/s" if speed else "- items/s")

    return progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
        disable=not show,
    )
