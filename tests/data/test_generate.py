"""`distil generate` as a library: schema and provenance, resumability, licence refusal, slices, bad rows."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from distil.data.generate import generate_dataset, label_new_inputs
from distil.data.records import COLUMNS, RECORD_SCHEMA, read_records
from distil.errors import DataError, LicenceError
from distil.spec.io import load_project
from distil.teachers.hf_local import HFLocalTeacher
from distil.teachers.registry import build_teacher
from tests.data.helpers import SEEDS, make_project


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class CountingTeacher(HFLocalTeacher):
    """The real tiny teacher, counting every input it is asked to label; can crash on a chosen call."""

    def __init__(self, *args, crash_on_call: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.per_input: dict[str, int] = {}
        self.calls = 0
        self.crash_on_call = crash_on_call

    def label_distribution(self, inputs, reuse_prefix=True):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise KeyboardInterrupt  # as if Ctrl-C arrived before this batch finished
        for text in inputs:
            self.per_input[text] = self.per_input.get(text, 0) + 1
        return super().label_distribution(inputs, reuse_prefix=reuse_prefix)


def _counting(project, crash_on_call=None):
    from distil.teachers.registry import seed_shots

    spec = project.spec
    return CountingTeacher(
        spec.teachers[0],
        spec.task,
        seed_shots(project),
        batch_size=4,
        fingerprint="sha256:tiny",
        crash_on_call=crash_on_call,
        **_loaded(spec),
    )


_MODEL_CACHE: dict = {}


def _loaded(spec):
    from distil.teachers.loading import load_causal_lm

    source = spec.teachers[0].source
    if source not in _MODEL_CACHE:
        model, tokenizer, _ = load_causal_lm(source)
        _MODEL_CACHE[source] = {"model": model, "tokenizer": tokenizer}
    return _MODEL_CACHE[source]


def test_raw_shards_have_the_record_schema_and_provenance(tmp_path, tiny_teacher_dir):
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    result = generate_dataset(project, show_progress=False)
    assert [p.parent.name for p in result.shards] == ["raw"]
    table = pq.read_table(result.shards[0])
    assert table.schema.equals(RECORD_SCHEMA)
    records = read_records(project.data_dir / "raw")
    assert len(records) == len(SEEDS)
    names = project.spec.task.label_names
    for r in records:
        assert r.source == "seed" and r.id.startswith("sha256:")
        assert len(r.label_probs) == 3 and abs(sum(r.label_probs) - 1) < 1e-5
        assert r.label == names[int(np.argmax(r.label_probs))]
        assert (
            r.teacher_fingerprint.startswith("sha256:")
            and r.prompt_hash.startswith("sha256:")
            and r.params_hash.startswith("sha256:")
        )
        assert set(r.tags) == {"tone", "length", "register"}
        assert r.gold_label in names
    urgent = next(r for r in records if "urgent" in r.input)
    assert urgent.tags["tone"] == "urgent"
    row = project.ledger.latest("datasets", "stage = ?", ("raw",))
    assert json.loads(row["counts"]) == {"seed": len(SEEDS)}
    assert project.ledger.events(kind="teacher.registered")
    assert set(COLUMNS) == set(table.column_names)


def test_interrupted_generation_resumes_calling_the_teacher_once_per_item(tmp_path, tiny_teacher_dir):
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    first = _counting(project, crash_on_call=3)  # 12 seeds, batches of 4: crash on the third batch
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(project, teacher=first, show_progress=False, batch_size=4)
    assert not list((project.data_dir / "raw").glob("*.parquet")) if (project.data_dir / "raw").exists() else True
    second = _counting(project)
    result = generate_dataset(project, teacher=second, show_progress=False, batch_size=4)
    calls = {text: first.per_input.get(text, 0) + second.per_input.get(text, 0) for text, _ in SEEDS}
    assert calls == {text: 1 for text, _ in SEEDS}
    assert len(first.per_input) == 8 and len(second.per_input) == 4
    assert result.counts == {"seed": len(SEEDS)}
    # a third run calls nothing and writes the same shard
    third = _counting(project)
    again = generate_dataset(project, teacher=third, show_progress=False, batch_size=4)
    assert third.per_input == {} and again.shards == result.shards


def test_cached_labels_equal_fresh_ones(tmp_path, tiny_teacher_dir):
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    teacher = _counting(project)
    generate_dataset(project, teacher=teacher, show_progress=False, batch_size=4)
    fresh = teacher.label_distribution([t for t, _ in SEEDS])
    stored = {r.input: r.label_probs for r in read_records(project.data_dir / "raw")}
    got = np.array([stored[t] for t, _ in SEEDS])
    assert np.abs(got - fresh).max() < 1e-6


def test_licence_refused_before_any_teacher_call(tmp_path, tiny_teacher_dir):
    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")
    text = spec_path.read_text().replace("distillation_permitted: 'yes'", "distillation_permitted: 'no'")
    spec_path.write_text(text)
    project = load_project(spec_path)
    with pytest.raises(LicenceError) as err:
        generate_dataset(project, show_progress=False)
    assert "smollm2" in err.value.message and "teachers[0].licence.distillation_permitted" in err.value.message
    assert not (project.data_dir / "raw").exists()
    assert not project.ledger.events(kind="teacher.registered")


def test_missing_licence_record_is_refused(tmp_path, tiny_teacher_dir):
    import yaml

    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")
    data = yaml.safe_load(spec_path.read_text())
    del data["teachers"][0]["licence"]
    spec_path.write_text(yaml.safe_dump(data))
    project = load_project(spec_path)
    with pytest.raises(LicenceError, match=r"teachers\[0\]\.licence.*smollm2"):
        build_teacher(project)


def test_bad_seed_row_names_file_and_line(tmp_path, tiny_teacher_dir):
    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")
    seeds = spec_path.parent / "seeds.jsonl"
    seeds.write_text(seeds.read_text() + '{"input": "fine", "label": "shipping"}\n')
    with pytest.raises(DataError, match=r"seeds\.jsonl:13: label 'shipping' is not one of task.labels"):
        generate_dataset(load_project(spec_path), show_progress=False)
    seeds.write_text('{"input": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"seeds\.jsonl:2: not valid JSON"):
        generate_dataset(load_project(spec_path), show_progress=False)


def test_csv_seeds_traffic_window_and_synthetic_inputs(tmp_path, tiny_teacher_dir):
    import datetime as dt

    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}", synthetic_budget=3)
    data = spec_path.read_text().replace("seeds: seeds.jsonl", "seeds: seeds.csv")
    spec_path.write_text(data)
    with open(spec_path.parent / "seeds.csv", "w") as f:
        f.write(
            'input,label,tags\n"Refund me, please",billing,"{""tone"": ""urgent""}"\nApp is '
            "slow,technical,\nReset password,account,\n"
        )
    now = dt.datetime.now(dt.UTC)
    log = tmp_path / "traffic.jsonl"
    log.write_text(
        json.dumps({"input": "old request about billing", "timestamp": (now - dt.timedelta(days=200)).isoformat()})
        + "\n"
        + json.dumps(
            {"messages": [{"role": "user", "content": "new request about login"}], "timestamp": now.timestamp()}
        )
        + "\n"
    )
    project = load_project(spec_path)
    result = generate_dataset(project, traffic=log, since="90d", show_progress=False)
    records = read_records(result.shards)
    by_source = {s: [r for r in records if r.source == s] for s in ("seed", "traffic", "synthetic")}
    assert [r.input for r in by_source["traffic"]] == ["new request about login"]
    refund = next(r for r in by_source["seed"] if r.input.startswith("Refund"))
    assert refund.tags["tone"] == "urgent"  # the record's own tag wins over the rules (which say calm)
    assert result.counts["seed"] == 3 and result.counts["traffic"] == 1
    assert all(r.input and r.source == "synthetic" for r in by_source["synthetic"])


def test_label_new_inputs_writes_targeted_shard(tmp_path, tiny_teacher_dir):
    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    records, shard = label_new_inputs(project, ["my card was charged again", "login page is broken"])
    assert shard is not None and shard.exists()
    assert [r.source for r in read_records(shard)] == ["targeted", "targeted"]
    assert all(len(r.label_probs) == 3 for r in records)


def test_generate_task_records_keep_text_and_topk(tmp_path, tiny_teacher_dir):
    import yaml

    spec_path = make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}")
    data = yaml.safe_load(spec_path.read_text())
    data["task"] = {"kind": "generate", "instruction": "Summarise: {input}", "max_new_tokens": 5}
    data["data"]["slices"] = []
    data["student"] = {"init": "teacher-layers:1"}  # a causal student: a generate task writes text
    spec_path.write_text(yaml.safe_dump(data))
    project = load_project(spec_path)
    result = generate_dataset(project, show_progress=False)
    records = read_records(result.shards)
    assert len(records) == len(SEEDS)
    for r in records:
        assert r.label_probs is None and isinstance(r.teacher_text, str)
        assert r.topk_ids is not None and len(r.topk_ids) == len(r.topk_logprobs) <= 5
        assert all(len(step) == 20 for step in r.topk_ids)


def test_synthetic_prompts_show_seeds_label_and_slices(tmp_path, tiny_teacher_dir):
    from distil.data.sources import read_inputs
    from distil.data.synthetic import clean_synthetic, synthetic_prompts

    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    seeds = read_inputs(project.path("seeds.jsonl"))
    prompts = synthetic_prompts(project.spec, seeds, 6)
    assert len(prompts) == 6 and len(set(prompts)) == 6
    assert "belongs to 'billing'" in prompts[0] and "belongs to 'technical'" in prompts[1]
    billing_seeds = [s.input for s in seeds if s.label == "billing"]
    assert any(f"- {text}" in prompts[0] for text in billing_seeds)
    assert " in tone" in prompts[0] and "register" in prompts[0]
    assert clean_synthetic('\n1. Ticket: "My bill is wrong"\nmore') == "My bill is wrong"


def test_list_prompts_continue_seeds_that_share_the_wanted_slices(tmp_path, tiny_teacher_dir):
    from distil.data.sources import InputItem, read_inputs
    from distil.data.synthetic import synthetic_prompts

    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    spec = project.spec.model_copy(
        update={"data": project.spec.data.model_copy(update={"synthetic_header": "Tickets for {label}:"})}
    )
    seeds = read_inputs(project.path("seeds.jsonl"))
    prompts = synthetic_prompts(spec, seeds, 6, style="list")
    assert len(set(prompts)) == 6
    assert prompts[0].startswith("Tickets for billing:\n- ") and prompts[1].startswith("Tickets for technical:\n- ")
    assert all(p.endswith("\n-") for p in prompts)
    billing = {s.input for s in seeds if s.label == "billing"}
    shown = [line[2:] for line in prompts[0].splitlines()[1:-1]]
    assert shown and set(shown) <= billing
    # the seeds shown are those sharing the most wanted slice values: one urgent seed among calm ones
    from distil.data.sources import tag_slices
    from distil.data.synthetic import _closest

    pool = [InputItem(f"a calm note number {i} about my invoice", label="billing") for i in range(8)]
    pool.append(InputItem("urgent: my invoice is wrong, fix it asap", label="billing"))
    rng = random.Random(0)
    wanted = {sl.name: "calm" if sl.name == "tone" else list(sl.values)[-1] for sl in spec.data.slices}
    tags = {id(s): tag_slices(s.input, spec.data.slices, s.tags) for s in pool}
    for _ in range(5):
        assert pool[-1] in _closest(pool, {**wanted, "tone": "urgent"}, tags, 2, rng)
        assert pool[-1] not in _closest(pool, wanted, tags, 2, rng)


def test_a_local_teacher_continues_list_prompts_and_an_api_teacher_is_asked_in_words(tmp_path, tiny_teacher_dir):
    from types import SimpleNamespace

    from distil.data.generate import synthetic_items
    from distil.data.sources import read_inputs
    from distil.data.synthetic import synthetic_style
    from distil.teachers.base import Capabilities

    project = load_project(make_project(tmp_path / "p", f"hf:{tiny_teacher_dir}"))
    teacher = build_teacher(project)
    calls: list[tuple[list[str], dict]] = []
    real = teacher.generate

    def spy(prompts, **params):  # noqa: ANN001, ANN202
        calls.append((list(prompts), params))
        return real(prompts, **params)

    teacher.generate = spy
    seeds = read_inputs(project.path("seeds.jsonl"))
    first = synthetic_items(project, teacher, seeds, 4)
    assert synthetic_style(project.spec, teacher) == "list"
    prompts, params = calls[0]
    assert len(prompts) == 4 and all(p.startswith("Support tickets for the ") and p.endswith("\n-") for p in prompts)
    assert params["chat"] is False and params["stop"] == "\n" and params["dtype"] == teacher.write_dtype
    assert [i.input for i in synthetic_items(project, teacher, seeds, 4)] == [i.input for i in first]
    assert len(calls) == 1  # the second time every slot came from the call cache
    assert synthetic_style(project.spec, SimpleNamespace(capabilities=Capabilities())) == "chat"
    chat = project.spec.model_copy(update={"data": project.spec.data.model_copy(update={"synthetic_style": "chat"})})
    assert synthetic_style(chat, teacher) == "chat"


def test_a_shard_written_before_topk_tokens_existed_still_reads(tmp_path):
    import pyarrow as pa

    from distil.data.records import LATER_COLUMNS, Record, write_records

    path = write_records([Record(input="hello", source="seed", teacher_text="hi")], tmp_path / "new.parquet")
    table = pq.read_table(path)
    old = table.drop_columns(sorted(LATER_COLUMNS))
    pq.write_table(old, tmp_path / "old.parquet")
    (record,) = read_records(tmp_path / "old.parquet")
    assert record.teacher_text == "hi" and record.topk_tokens is None
    assert "topk_tokens" in RECORD_SCHEMA.names and isinstance(table.schema.field("topk_tokens").type, pa.ListType)
    pq.write_table(old.drop_columns(["teacher_text"]), tmp_path / "broken.parquet")
    with pytest.raises(DataError, match="missing columns teacher_text"):
        read_records(tmp_path / "broken.parquet")
