"""Students: layers copied from the teacher, any config, a local checkpoint, LoRA, the size report."""

from __future__ import annotations

import pytest
import torch

from distil.errors import TrainError
from distil.spec.models import StudentSpec
from distil.train.students import build_student, count_params, evenly_spread, label_token_ids

torch.set_num_threads(1)


def test_evenly_spread_keeps_first_and_last():
    assert evenly_spread(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spread(4, 2) == [0, 3]
    assert evenly_spread(4, 4) == [0, 1, 2, 3]
    with pytest.raises(TrainError):
        evenly_spread(4, 5)


def test_teacher_layers_copies_embeddings_and_spread_layers(tiny_teacher_dir):
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(str(tiny_teacher_dir))
    build = build_student(StudentSpec(init="teacher-layers:2", size_max_params=150_000), tiny_teacher_dir)
    student = build.model
    assert student.config.num_hidden_layers == 2
    torch.testing.assert_close(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    torch.testing.assert_close(student.model.norm.weight, teacher.model.norm.weight)
    row = build.size_row()
    assert row["teacher_params"] == count_params(teacher) and row["student_params"] < row["teacher_params"]
    assert row["within_size_target"] is True
    # the copied student computes: same input, finite logits
    assert torch.isfinite(student(torch.tensor([[1, 2, 3]])).logits).all()


def test_config_and_path_students(tiny_teacher_dir, tmp_path):
    config = {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 512,
    }
    build = build_student(StudentSpec(config=config), tiny_teacher_dir)
    assert build.model.config.hidden_size == 32 and build.params == count_params(build.model)
    build.model.save_pretrained(tmp_path / "ckpt")
    build.tokenizer.save_pretrained(tmp_path / "ckpt")
    again = build_student(StudentSpec(path=str(tmp_path / "ckpt")), None)
    torch.testing.assert_close(again.model.lm_head.weight, build.model.lm_head.weight)
    with pytest.raises(TrainError, match="no config.json"):
        build_student(StudentSpec(path=str(tmp_path / "missing")), None)
    with pytest.raises(TrainError, match="local teacher"):
        build_student(StudentSpec(init="teacher-layers:2"), None)


def test_lora_student_trains_only_adapters(tiny_teacher_dir):
    build = build_student(StudentSpec(init="teacher-layers:2", lora=True), tiny_teacher_dir)
    trainable = [n for n, p in build.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_labels_sharing_a_first_token_are_refused(tiny_teacher_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_teacher_dir))
    assert len(set(label_token_ids(tok, ["billing", "technical", "account"]))) == 3
    with pytest.raises(TrainError, match="share a first token"):
        label_token_ids(tok, ["billing", "billing"])
