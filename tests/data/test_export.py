"""`distil export-data` for a generate task: a DatasetDict and Parquet files that `datasets` reads back as written."""

from __future__ import annotations

import json

from datasets import load_dataset, load_from_disk

from distil.data.export import export_data
from distil.spec.io import load_project
from tests.train.conftest import generate_records, write_curated, write_spec


def test_a_generate_dataset_round_trips_through_datasets(tmp_path, tiny_teacher_dir):
    spec = write_spec(tmp_path / "gen", tiny_teacher_dir, kind="generate")
    train, validation = generate_records(6), generate_records(3, seed=1)
    dataset_hash = write_curated(spec, train, validation)
    project = load_project(spec)
    out = export_data(project, tmp_path / "out")
    saved = load_from_disk(str(out / "hf"))
    assert set(saved) == {"train", "validation", "test"}  # the splits the curated folder has (no probe here)
    assert list(saved["train"].features) == ["id", "input", "teacher_text", "tags"]
    assert saved["train"]["teacher_text"] == [r.teacher_text for r in train]
    assert saved["validation"]["id"] == [r.id for r in validation]
    assert dataset_hash in saved["train"].info.description
    parquet = load_dataset("parquet", data_files={"train": str(out / "parquet" / "train.parquet")})
    assert parquet["train"].to_list() == saved["train"].to_list()
    assert json.loads(saved["train"][0]["tags"]) == train[0].tags

    out_again = export_data(project, tmp_path / "out")  # a second export replaces the first, folder by folder
    assert out_again == out and len(load_from_disk(str(out / "hf"))["train"]) == len(train)
