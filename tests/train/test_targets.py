"""`distil plan --target`: file and running memory per export type, and which inits fit a device's budget."""

from __future__ import annotations

import pytest
import yaml
from transformers import LlamaConfig

from distil.cli import main
from distil.train.targets import DEVICE_BUDGETS, GiB, _rows, running_memory

# a SmolLM2-1.7B-like shape (24 layers, hidden 2048, 8 of 32 heads for keys and values): about 1.6B parameters
ONE_AND_A_HALF_B = LlamaConfig(
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=24,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=49152,
    tie_word_embeddings=True,
)


def test_running_memory_is_the_weights_the_kv_cache_and_one_row_of_logits():
    file_bytes, memory = running_memory(1_000_000, "q8_0", ONE_AND_A_HALF_B, context=256)
    assert file_bytes == 1_062_500  # 34 bytes per block of 32 weights
    kv = 2 * 24 * 8 * 64 * 256 * 2  # keys and values, per layer, per kv head, per head dim, per token, float16
    assert memory == file_bytes + kv + 49152 * 4


def test_a_phone_takes_a_one_and_a_half_billion_student_only_at_4_bits():
    rows = {r.gguf_type: r for r in _rows("x", ONE_AND_A_HALF_B, 256, DEVICE_BUDGETS["phone"][0])}
    assert 1.4e9 < rows["f32"].params < 1.8e9
    assert [t for t, r in rows.items() if r.fits] == ["q4_0"]
    assert rows["q4_0"].memory_bytes <= GiB < rows["q8_0"].memory_bytes


def test_plan_target_prints_the_students_sizes_and_the_deepest_fitting_init(classify_project, capsys):
    spec = yaml.safe_load(classify_project.read_text())
    spec["student"] = {"init": "teacher-layers:2"}
    classify_project.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["plan", "--target", "browser", "--spec", str(classify_project)]) == 0
    out = capsys.readouterr().out
    assert "teacher-layers:2" in out and "teacher-layers:4" in out and "q4_0" in out and "V8" in out


@pytest.mark.parametrize(("argv", "message"), [(["--target", "fridge"], "choose one of phone, browser, laptop")])
def test_an_unknown_target_is_refused(classify_project, capsys, argv, message):
    assert main(["plan", *argv, "--spec", str(classify_project)]) == 2
    assert message in capsys.readouterr().err
