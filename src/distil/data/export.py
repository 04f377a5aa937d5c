"""`distil export-data`: a curated dataset as OpenAI fine-tuning JSONL, a Hugging Face ``DatasetDict`` and Parquet
files, with the provenance of every row in a sidecar file, for teams that prefer a managed fine-tuning service or
their own training code.

The Hugging Face folder is written by ``datasets``' own ``DatasetDict.save_to_disk`` (``datasets.load_from_disk``
reads it back) and the Parquet files by ``Dataset.to_parquet`` (``datasets.load_dataset("parquet", data_files=...)``
reads them, class names included). Each output folder is replaced whole, so a reader never sees half an export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.data.records import Record
from distil.data.split import CURATED_SPLITS
from distil.files import replace_dir_atomic, write_text_atomic
from distil.runs import latest_curated
from distil.spec.io import Project

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

PROVENANCE = (
    "id",
    "source",
    "teacher_id",
    "teacher_fingerprint",
    "prompt_hash",
    "params_hash",
    "created_at",
    "cost",
    "split",
)
NO_LABEL = -1  # the datasets convention for a row without a class (a ClassLabel column holds indices)


def chat_example(project: Project, record: Record) -> dict:
    """One OpenAI fine-tuning line: the instruction, the bare input, the teacher's answer."""
    task = project.spec.task
    answer = record.label if task.kind == "classify" else (record.teacher_text or "")
    messages = []
    if task.instruction.strip() and "{input}" not in task.instruction:
        messages.append({"role": "system", "content": task.instruction.strip()})
    messages.append({"role": "user", "content": record.input})
    messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def dataset_features(project: Project) -> Features:
    """The columns of every split: a classify task's teacher label as a ``ClassLabel`` over ``task.labels`` with the
    teacher's distribution beside it; a generate task's teacher text. Slice tags are a JSON object per row."""
    from datasets import ClassLabel, Features, List, Value

    task = project.spec.task
    columns: dict[str, Any] = {"id": Value("string"), "input": Value("string")}
    if task.kind == "classify":
        columns["label"] = ClassLabel(names=task.label_names)
        columns["label_probs"] = List(Value("float32"))
        columns["gold_label"] = Value("string")
    else:
        columns["teacher_text"] = Value("string")
    columns["tags"] = Value("string")
    return Features(columns)


def dataset_row(project: Project, record: Record) -> dict[str, Any]:
    """One record as a row of :func:`dataset_features`."""
    task = project.spec.task
    row: dict[str, Any] = {"id": record.id, "input": record.input}
    if task.kind == "classify":
        names = task.label_names
        row["label"] = names.index(record.label) if record.label in names else NO_LABEL
        row["label_probs"] = record.label_probs
        row["gold_label"] = record.gold_label
    else:
        row["teacher_text"] = record.teacher_text
    row["tags"] = json.dumps(record.tags, ensure_ascii=False, sort_keys=True)
    return row


def dataset_dict(project: Project, splits: dict[str, list[Record]], dataset_hash: str) -> DatasetDict:
    """The curated splits as a ``datasets.DatasetDict``, the dataset's hash in each split's description."""
    from datasets import Dataset, DatasetDict, DatasetInfo

    features = dataset_features(project)
    description = f"{project.spec.name}: curated by distil, dataset {dataset_hash}"
    return DatasetDict(
        {
            split: Dataset.from_list(
                [dataset_row(project, r) for r in records],
                features=features,
                info=DatasetInfo(description=description, features=features),
            )
            for split, records in splits.items()
        }
    )


def _write_openai(folder: Path, project: Project, splits: dict[str, list[Record]]) -> None:
    for split, records in splits.items():
        lines = [json.dumps(chat_example(project, r), ensure_ascii=False) + "\n" for r in records]
        (folder / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")


def _write_parquet(folder: Path, datasets: DatasetDict) -> None:
    for split, dataset in datasets.items():
        dataset.to_parquet(str(folder / f"{split}.parquet"))


def export_data(project: Project, out: str | Path | None = None) -> Path:
    """Write ``openai/{split}.jsonl``, ``hf/`` (a saved ``DatasetDict``), ``parquet/{split}.parquet`` and
    ``provenance.jsonl`` for the newest curated dataset; returns the folder they are in."""
    data = latest_curated(project)
    target = Path(out) if out else project.state_dir / "exports" / data.folder.name
    # datasets curated before the probe pool existed have no probe.parquet
    splits = {split: data.records(split) for split in CURATED_SPLITS if data.split_path(split).is_file()}
    datasets = dataset_dict(project, splits, data.dataset_hash)
    replace_dir_atomic(target / "openai", lambda folder: _write_openai(folder, project, splits))
    replace_dir_atomic(target / "hf", lambda folder: datasets.save_to_disk(str(folder)))
    replace_dir_atomic(target / "parquet", lambda folder: _write_parquet(folder, datasets))
    provenance = [
        json.dumps({k: getattr(r, k) for k in PROVENANCE}, ensure_ascii=False) + "\n"
        for records in splits.values()
        for r in records
    ]
    write_text_atomic(target / "provenance.jsonl", "".join(provenance))
    return target
