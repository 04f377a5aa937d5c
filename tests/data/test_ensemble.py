"""Several teachers on one dataset (data.teachers): the combination against float64 references, each teacher's
answer kept per record, disagreement as a curation filter (drop, or the probe pool), agreement per slice in the
curation report, every teacher's licence checked before any call. Teachers: an OpenAI-compatible server on
127.0.0.1 answering by keywords, and the tiny random local model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from distil.data.curate import curate
from distil.data.ensemble import combine_distributions, teacher_disagreement
from distil.data.generate import generate_dataset
from distil.data.records import read_records
from distil.errors import LicenceError, SpecError
from distil.evaluate.report import teacher_agreement_rows
from distil.spec.gate import lock_gate
from distil.spec.io import load_project
from tests.data.helpers import SEEDS, make_project
from tests.teachers.openai_server import RunningServer, ServerState


def test_weighted_mean_and_product_of_experts_match_float64_references():
    a = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    b = np.array([[0.1, 0.6, 0.3], [0.2, 0.3, 0.5]])
    weights = [3.0, 1.0]
    mean = combine_distributions(np.stack([a, b]), weights, "mean")
    np.testing.assert_allclose(mean, 0.75 * a + 0.25 * b, rtol=1e-12)
    product = combine_distributions(np.stack([a, b]), weights, "product")
    reference = np.array([[a[0, j] ** 0.75 * b[0, j] ** 0.25 for j in range(3)]])
    np.testing.assert_allclose(product[0], (reference / reference.sum())[0], rtol=1e-9)
    assert product[1, 2] < 1e-8 and mean[1, 2] == pytest.approx(0.125)  # a label one expert rules out is ruled out
    np.testing.assert_allclose(product.sum(axis=1), 1.0)


def test_disagreement_is_zero_for_the_same_answer_and_one_for_certain_different_labels():
    same = np.array([[[0.6, 0.3, 0.1]], [[0.6, 0.3, 0.1]]])
    opposite = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    partial = np.array([[[0.8, 0.2, 0.0]], [[0.3, 0.7, 0.0]]])
    assert teacher_disagreement(same, [1, 1])[0] == pytest.approx(0.0, abs=1e-12)
    assert teacher_disagreement(opposite, [1, 1])[0] == pytest.approx(1.0)
    p, q = partial[0, 0], partial[1, 0]
    m = (p + q) / 2

    def kl(x, y):
        return sum(xi * np.log(xi / yi) for xi, yi in zip(x, y, strict=True) if xi > 0)

    assert teacher_disagreement(partial, [1, 1])[0] == pytest.approx((kl(p, m) + kl(q, m)) / 2 / np.log(2))


def ensemble_project(tmp_path, base_url: str, tiny_teacher_dir, **data):
    path = make_project(tmp_path, f"openai:{base_url}#keyword", lock=False)
    spec = yaml.safe_load(path.read_text())
    keyword = spec["teachers"][0]
    keyword.update({"id": "keyword", "top_logprobs": 5, "weight": 3.0})
    local = {**copy.deepcopy(keyword), "id": "tiny", "source": f"hf:{tiny_teacher_dir}", "weight": 1.0}
    local.pop("top_logprobs")
    spec["teachers"] = [keyword, local]
    spec["cost"]["teacher_per_1m_requests"] = 1000.0
    spec["data"].update({"teachers": ["keyword", "tiny"], "combine": "mean", **data})
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    project = load_project(path)
    lock_gate(project, project.spec.roles.sponsor)  # the prices are locked with the gate, before any teacher call
    return project


def test_two_teachers_label_together_each_answer_kept_and_disagreement_curated(tmp_path, tiny_teacher_dir):
    with RunningServer(ServerState()) as server:
        project = ensemble_project(tmp_path / "p", server.base_url, tiny_teacher_dir)
        result = generate_dataset(project, show_progress=False)
        requests = server.state.requests
        again = generate_dataset(load_project(project.spec_path), show_progress=False)
        assert server.state.requests == requests and again.shards == result.shards  # every teacher's calls cached

    records = result.records
    assert len(records) == len(SEEDS)
    for r in records:
        keyword, tiny = r.teacher_answers
        assert (keyword["teacher_id"], tiny["teacher_id"]) == ("keyword", "tiny") and r.teacher_id == "keyword+tiny"
        assert keyword["teacher_fingerprint"].startswith("api:") and tiny["teacher_fingerprint"].startswith("sha256:")
        expected = 0.75 * np.array(keyword["label_probs"]) + 0.25 * np.array(tiny["label_probs"])
        np.testing.assert_allclose(r.label_probs, expected, rtol=1e-5)
        assert r.label == project.spec.task.label_names[int(np.argmax(expected))]
        assert r.cost == pytest.approx(keyword["cost"] + tiny["cost"]) and keyword["cost"] == pytest.approx(1e-3)
        assert 0.0 <= r.teacher_disagreement <= 1.0
    stored = read_records(result.shards[0])
    assert [r.teacher_answers for r in stored] == [r.teacher_answers for r in records]
    generated = project.ledger.events("dataset.generated")[-1].payload
    assert [t["id"] for t in generated["teachers"]] == ["keyword", "tiny"]

    disagreement = np.array([r.teacher_disagreement for r in records])
    limit = float(np.median(disagreement))
    disputed = {r.id for r in records if r.teacher_disagreement > limit}
    assert 0 < len(disputed) < len(records)

    spec = yaml.safe_load(project.spec_path.read_text())
    spec["data"]["filters"].update({"max_teacher_disagreement": limit, "disagreement_action": "drop"})
    project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    dropped = curate(load_project(project.spec_path))
    assert {d["id"] for d in dropped.removed["teacher_disagreement"]} == disputed
    assert not disputed & {r.id for split in dropped.splits.values() for r in split}

    spec["data"]["filters"]["disagreement_action"] = "probe"
    project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    probed = curate(load_project(project.spec_path))
    assert probed.removed["teacher_disagreement"] == []
    assert disputed <= {r.id for r in probed.splits["probe"]}
    assert not disputed & {r.id for name in ("train", "validation", "test") for r in probed.splits[name]}
    assert probed.counts["probe_teacher_disagreement"] == len(disputed)

    report = json.loads((probed.folder / "report.json").read_text())
    agreement = report["teacher_agreement"]
    assert agreement["all"]["n"] == len(records)
    assert agreement["all"]["mean_disagreement"] == pytest.approx(disagreement.mean(), abs=1e-4)
    same_top = [len({a["label"] for a in r.teacher_answers}) == 1 for r in records]
    assert agreement["all"]["top_label_agreement"] == pytest.approx(np.mean(same_top), abs=1e-4)
    assert any(key.startswith("tone=") for key in agreement)
    rows = teacher_agreement_rows(agreement)
    assert rows[0]["slice"] == "all" and {r["slice"] for r in rows} == set(agreement)


def test_every_labelling_teachers_licence_is_checked_before_any_call(tmp_path, tiny_teacher_dir):
    with RunningServer(ServerState()) as server:
        project = ensemble_project(tmp_path / "p", server.base_url, tiny_teacher_dir)
        spec = yaml.safe_load(project.spec_path.read_text())
        spec["teachers"][1]["licence"]["distillation_permitted"] = "no"
        project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        with pytest.raises(LicenceError, match="tiny"):
            generate_dataset(load_project(project.spec_path), show_progress=False)
        assert server.state.requests == 0


def test_data_teachers_must_name_known_teachers_and_a_classify_task(tmp_path, tiny_teacher_dir):
    project = ensemble_project(tmp_path / "p", "http://127.0.0.1:9/v1", tiny_teacher_dir)
    spec = yaml.safe_load(project.spec_path.read_text())
    spec["data"]["teachers"] = ["keyword", "nobody"]
    project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SpecError, match="data.teachers: no teacher with id 'nobody'"):
        load_project(project.spec_path)
