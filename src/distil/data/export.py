"""`distil export-data`: a curated dataset as OpenAI fine-tuning JSONL and a Hugging Face datasets folder,
with the provenance of every row in a sidecar file, for teams that prefer a managed fine-tuning service."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distil.data.records import Record, read_records
from distil.data.split import CURATED_SPLITS
from distil.files import write_json_atomic
from distil.runs import latest_curated
from distil.spec.io import Project

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


def export_data(project: Project, out: str | Path | None = None) -> Path:
    """Write ``openai/{split}.jsonl``, ``hf/`` and ``provenance.jsonl`` for the newest curated dataset."""
    data = latest_curated(project)
    dataset_hash, folder = data.dataset_hash, data.folder
    target = Path(out) if out else project.state_dir / "exports" / folder.name
    (target / "openai").mkdir(parents=True, exist_ok=True)
    (target / "hf").mkdir(parents=True, exist_ok=True)
    info = {
        "description": f"{project.spec.name}: curated by distil",
        "dataset_hash": dataset_hash,
        "splits": {},
        "features": {},
    }
    with open(target / "provenance.jsonl", "w", encoding="utf-8") as prov:
        for split in CURATED_SPLITS:
            if not (folder / f"{split}.parquet").is_file():
                continue  # datasets curated before the probe pool existed have no probe.parquet
            records = read_records(folder / f"{split}.parquet")
            with open(target / "openai" / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(chat_example(project, r), ensure_ascii=False) + "\n")
            rows = [
                {
                    "id": r.id,
                    "input": r.input,
                    "label": r.label,
                    "label_probs": r.label_probs,
                    "teacher_text": r.teacher_text,
                    "tags": json.dumps(r.tags),
                }
                for r in records
            ]
            table = pa.Table.from_pylist(
                rows,
                schema=pa.schema(
                    [
                        ("id", pa.string()),
                        ("input", pa.string()),
                        ("label", pa.string()),
                        ("label_probs", pa.list_(pa.float32())),
                        ("teacher_text", pa.string()),
                        ("tags", pa.string()),
                    ]
                ),
            )
            _write_hf_split(table, target / "hf", split)
            info["splits"][split] = {"name": split, "num_examples": len(rows)}
            info["features"] = {f.name: str(f.type) for f in table.schema}
            for r in records:
                prov.write(json.dumps({k: getattr(r, k) for k in PROVENANCE}, ensure_ascii=False) + "\n")
    write_json_atomic(target / "hf" / "dataset_info.json", info)
    return target


def _write_hf_split(table: pa.Table, folder: Path, split: str) -> None:
    """With the ``datasets`` package, a save_to_disk folder per split; without it, one Parquet file per split
    (``datasets.load_dataset("parquet", data_dir=...)`` reads either)."""
    try:
        import datasets
    except ImportError:
        pq.write_table(table, folder / f"{split}.parquet")
        return
    datasets.Dataset(table).save_to_disk(str(folder / split))
