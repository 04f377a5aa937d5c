"""``train:``: grouped settings, the flat keys of older specs, and the combinations refused when the spec loads."""

from __future__ import annotations

import copy

import pytest
import yaml

from distil.errors import SpecError
from distil.spec.io import load_project, spec_from_data
from distil.spec.models import FLAT_TRAIN_KEYS, TrainSpec

from ..conftest import EXAMPLES

FLAT = {
    "loss": "jsd",
    "temperature": 1.5,
    "alpha": 0.25,
    "beta": 0.3,
    "skew_alpha": 0.2,
    "epochs": 4,
    "batch_size": 2,
    "grad_accum": 3,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "warmup_ratio": 0.2,
    "max_length": 128,
    "patience": 1,
    "keep": "last",
    "eval_every": 5,
    "seed": 7,
    "topk_cache_k": 16,
    "on_policy_lambda": 0.5,
    "chunk_size": 64,
    "on_policy_temperature": 0.7,
    "on_policy_max_new_tokens": 12,
    "rationale_weight": 0.0,
    "feature_weight": 0.0,
    "feature_kind": "cosine",
    "feature_layers": {1: 2},
    "relation_weight": 0.0,
    "relation_kind": "similarity",
    "precision": "bf16",
    "compile": True,
    "freeze_embeddings": True,
}


def _data(kind: str = "generate", teacher: str = "hf:/models/tiny", **train) -> dict:  # noqa: ANN003
    task = {
        "kind": kind,
        **({"labels": [{"name": "a"}, {"name": "b"}]} if kind == "classify" else {"instruction": "Summarise: {input}"}),
    }
    return {
        "task": task,
        "play": {"kind": "cost"},
        "roles": {"sponsor": "s", "driver": "d", "validator": "v"},
        "teachers": [{"id": "t", "source": teacher}],
        "train": train,
    }


def test_a_flat_spec_of_every_old_key_loads_into_the_groups():
    assert set(FLAT) >= set(FLAT_TRAIN_KEYS)  # the fixture names every key that moved
    train = spec_from_data(_data(**FLAT)).train
    for flat, (group, name) in FLAT_TRAIN_KEYS.items():
        assert getattr(getattr(train, group), name) == FLAT[flat], flat
    assert train.epochs == 4 and train.chunk_size == 64 and train.precision == "bf16"
    grouped = {k: v for k, v in FLAT.items() if k not in FLAT_TRAIN_KEYS}
    for flat, (group, name) in FLAT_TRAIN_KEYS.items():
        grouped.setdefault(group, {})[name] = FLAT[flat]
    assert spec_from_data(_data(**grouped)).train == train


def test_the_examples_load_and_use_the_groups():
    paths = sorted(EXAMPLES.glob("*/distil.yaml"))
    assert paths
    for path in paths:
        raw = yaml.safe_load(path.read_text()).get("train", {})
        assert not set(raw) & set(FLAT_TRAIN_KEYS), f"{path}: flat train keys {sorted(set(raw) & set(FLAT_TRAIN_KEYS))}"
        assert isinstance(load_project(path).spec.train, TrainSpec)


def test_a_key_given_flat_and_grouped_with_different_values_is_refused():
    with pytest.raises(SpecError, match=r"train.lr and train.optimizer.lr are both set"):
        spec_from_data(_data(lr=1e-3, optimizer={"lr": 5e-4}))
    assert spec_from_data(_data(lr=1e-3, optimizer={"lr": 1e-3})).train.optimizer.lr == 1e-3


def test_bad_group_values_name_the_grouped_field():
    with pytest.raises(SpecError, match=r"train.optimizer.lr must be > 0"):
        spec_from_data(_data(optimizer={"lr": 0}))
    with pytest.raises(SpecError, match=r"train.on_policy.fraction must be ≤ 1"):
        spec_from_data(_data(on_policy_lambda=2))


@pytest.mark.parametrize(
    ("kind", "teacher", "train", "message"),
    [
        ("classify", "hf:/m", {"on_policy": {"fraction": 0.5}}, "train.on_policy.fraction applies to generate tasks"),
        (
            "generate",
            "openai:http://127.0.0.1:9/v1#gpt-x",
            {"on_policy_lambda": 0.5},
            "train.on_policy.fraction needs a local teacher",
        ),
        ("generate", "hf:/m", {"features": {"weight": 1.0}}, "train.features.weight applies to classify tasks"),
        ("generate", "hf:/m", {"relation_weight": 1.0}, "train.features.relation_weight applies to classify tasks"),
        (
            "generate",
            "hf:/m",
            {"distillation": {"rationale_weight": 1.0}},
            "train.distillation.rationale_weight applies to classify",
        ),
        ("classify", "openai:http://127.0.0.1:9/v1#gpt-x", {"feature_weight": 1.0}, "need the teacher's hidden states"),
        (
            "classify",
            "openai:http://127.0.0.1:9/v1#gpt-x",
            {"features": {"relation_weight": 1.0}},
            "need the teacher's hidden states",
        ),
        (
            "classify",
            "hf:/m",
            {"rationale_weight": 1.0},
            "rationale_weight needs rationales to learn from: set data.rationales: true",
        ),
        ("classify", "hf:/m", {"loss": "uld"}, "train.distillation.loss uld compares token distributions of text"),
        (
            "generate",
            "hf:/m",
            {"distillation": {"loss": "uld"}, "on_policy": {"fraction": 0.5}},
            "on-policy steps score by token id",
        ),
    ],
)
def test_combinations_that_cannot_train_are_refused_when_the_spec_loads(kind, teacher, train, message):
    data = _data(kind, teacher, **train)
    with pytest.raises(SpecError) as err:
        spec_from_data(data)
    assert message in str(err.value) and "\n" not in str(err.value) and "(top level)" not in str(err.value)
    fixed = copy.deepcopy(data)
    fixed["train"] = {}
    assert spec_from_data(fixed).train == TrainSpec()


def test_the_allowed_combinations_load():
    assert spec_from_data(_data("generate", "gguf:pkg#f.gguf", distillation={"loss": "uld"})).train.distillation.loss
    assert spec_from_data(_data("generate", "hf:/m", on_policy={"fraction": 0.5})).train.on_policy.fraction == 0.5
    classify = _data(
        "classify",
        "gguf:pkg#f.gguf",
        features={"weight": 1.0, "relation_weight": 1.0},
        distillation={"rationale_weight": 1.0},
    )
    classify["data"] = {"rationales": True}
    assert spec_from_data(classify).train.features.wants_teacher_states


def test_distil_check_refuses_before_any_teacher_is_called(tmp_path, capfd):
    from distil.cli import main

    data = _data("classify", "openai:http://127.0.0.1:9/v1#gpt-x", feature_weight=1.0)
    # nothing listens on port 9: had a teacher been called, check would fail on the connection instead
    (tmp_path / "distil.yaml").write_text(yaml.safe_dump(data))
    assert main(["check", "--spec", str(tmp_path / "distil.yaml")]) == 2
    assert "train.features.weight / relation_weight need the teacher's hidden states" in capfd.readouterr().err


def test_uld_with_an_api_teacher_needs_its_top_logprobs():
    data = _data("generate", "openai:http://127.0.0.1:9/v1#gpt-x", distillation={"loss": "uld"})
    assert spec_from_data(data).train.distillation.loss == "uld"  # top_logprobs 20 by default
    data["teachers"][0]["top_logprobs"] = 0
    with pytest.raises(SpecError, match="uld needs the teacher's distribution at each of its tokens"):
        spec_from_data(data)
