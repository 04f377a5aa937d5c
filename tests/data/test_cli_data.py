"""The data commands end to end through the CLI: generate, curate, export-data."""

from __future__ import annotations

import json

import torch
from datasets import load_dataset, load_from_disk

from distil.cli import main
from tests.data.helpers import make_project


def test_generate_curate_export_through_the_cli(tmp_path, tiny_teacher_dir, capsys):
    torch.set_num_threads(1)
    spec_path = make_project(
        tmp_path / "p", f"hf:{tiny_teacher_dir}", filters={"min_confidence": 0.0, "min_per_slice": 5}
    )
    assert main(["generate", "--spec", str(spec_path)]) == 0
    assert main(["curate", "--spec", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "slice coverage" in out and "starved" in out  # 12 seeds cannot fill every slice value
    export = tmp_path / "export"
    assert main(["export-data", "--spec", str(spec_path), "--out", str(export)]) == 0
    lines = [json.loads(x) for x in (export / "openai" / "train.jsonl").read_text().splitlines()]
    assert lines and lines[0]["messages"][-1]["role"] == "assistant"
    assert lines[0]["messages"][-1]["content"] in ("billing", "technical", "account")
    assert (export / "hf" / "dataset_dict.json").is_file()  # written by datasets' own save_to_disk
    saved = load_from_disk(str(export / "hf"))
    total = sum(len(split) for split in saved.values())
    assert total == len((export / "provenance.jsonl").read_text().splitlines()) == 12
    assert saved["train"].features["label"].names == ["billing", "technical", "account"]
    first = saved["train"][0]
    assert saved["train"].features["label"].int2str(first["label"]) == lines[0]["messages"][-1]["content"]
    assert first["input"] == lines[0]["messages"][-2]["content"] and len(first["label_probs"]) == 3
    files = {split: str(export / "parquet" / f"{split}.parquet") for split in saved}
    parquet = load_dataset("parquet", data_files=files)
    assert set(parquet) == set(saved)
    for split in saved:  # the same rows, columns and class names as the saved DatasetDict
        assert parquet[split].features == saved[split].features
        assert parquet[split].to_list() == saved[split].to_list()


def test_generate_refuses_unlicensed_teacher_with_exit_2(tmp_path, tiny_teacher_dir, capsys):
    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")
    spec_path.write_text(spec_path.read_text().replace("distillation_permitted: 'yes'", "distillation_permitted: 'no'"))
    assert main(["generate", "--spec", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert "smollm2" in err and "teachers[0].licence.distillation_permitted" in err
