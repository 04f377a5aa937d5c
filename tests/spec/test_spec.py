"""The spec loader: every bad input becomes one SpecError line naming the field."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distil.errors import DistilError, SpecError
from distil.spec.io import load_project, spec_from_data, spec_from_text
from distil.spec.models import Spec
from distil.spec.templates import PLAY_GATES, init_project, render_commented

from ..conftest import EXAMPLES


def example_data() -> dict:
    return yaml.safe_load((EXAMPLES / "triage" / "distil.yaml").read_text())


def test_every_example_spec_loads():
    names = [p.parent.name for p in EXAMPLES.glob("*/distil.yaml")]
    assert "triage" in names
    for path in EXAMPLES.glob("*/distil.yaml"):
        spec = load_project(path).spec
        assert isinstance(spec, Spec)
        assert spec.teachers[0].licence is not None


def test_yaml_yes_is_read_as_permitted():
    data = example_data()
    data["teachers"][0]["licence"]["distillation_permitted"] = True  # what a bare `yes` parses to
    assert spec_from_data(data).teachers[0].licence.distillation_permitted == "yes"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["gate"].__setitem__("fidelity_min", 1.3), "gate.fidelity_min must be ≤ 1, got 1.3"),
        (lambda d: d["task"].__setitem__("kidn", "x"), "task.kidn is not a known field"),
        (
            lambda d: d["cost"].__setitem__("teacher_batch_discount", 0.5),
            "cost.teacher_batch_discount has moved to teachers[i].batch_discount",
        ),
        (lambda d: d["cost"].__setitem__("monthly_requests", "lots"), "cost.monthly_requests"),
        (
            lambda d: d["roles"].__setitem__("validator", d["roles"]["driver"]),
            "roles.validator must differ from roles.driver",
        ),
        (lambda d: d["teachers"][0].__setitem__("source", "ftp://x"), "teachers[0].source"),
        (lambda d: d["student"].__setitem__("init", "teacher-layers:0"), "student.init"),
        (lambda d: d.pop("task"), "task is required"),
        (
            lambda d: d["task"].update(scoring="channel", few_shot={"select": "similar"}),
            "task.scoring: channel scoring uses the fixed shots",
        ),
        (
            lambda d: d["task"].update(scoring="both", few_shot={"channel_template": "{input} {label}"}),
            "task.few_shot.channel_template",
        ),
    ],
)
def test_bad_fields_are_named(mutate, field):
    data = copy.deepcopy(example_data())
    mutate(data)
    with pytest.raises(SpecError) as err:
        spec_from_data(data)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_names_the_line():
    with pytest.raises(SpecError, match="malformed YAML at line 3"):
        spec_from_text("task:\n  kind: classify\n labels: x\n")


def test_missing_spec_says_to_init(tmp_path):
    with pytest.raises(SpecError) as err:
        load_project(tmp_path / "distil.yaml")
    assert "distil init" in err.value.hint


@pytest.mark.parametrize("play", sorted(PLAY_GATES))
def test_init_example_with_a_play_writes_that_plays_gate(tmp_path, play):
    path = init_project(tmp_path / play, example="triage", play=play)
    spec = load_project(path).spec
    assert spec.play.kind == play
    for key, value in PLAY_GATES[play].items():
        assert getattr(spec.gate, key) == value


def test_init_refuses_to_overwrite(tmp_path):
    init_project(tmp_path, example="triage")
    with pytest.raises(SpecError, match="already exists"):
        init_project(tmp_path, example="triage")


def test_render_round_trips_the_example():
    spec = load_project(EXAMPLES / "triage" / "distil.yaml").spec
    assert spec_from_text(render_commented(spec)) == spec


# --- fuzzing: nothing but DistilError may escape the loader -----------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20) | st.dates(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_random_yaml_text_only_raises_distil_errors(text):
    try:
        spec_from_text(text)
    except DistilError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_data_only_raises_distil_errors(data):
    try:
        spec_from_data(data)
    except DistilError:
        pass


section_names = st.sampled_from(["task", "play", "roles", "teachers", "student", "data", "gate", "cost"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section_names, json_values)
def test_random_section_replacement_only_raises_distil_errors(section, value):
    data = example_data()
    data[section] = value
    try:
        spec_from_data(data)
    except DistilError:
        pass


# --- hardening: what is locked, finite numbers, plain names, one value per key -----------------------


def test_the_gate_lock_covers_the_cost_section(triage_project):
    from distil.errors import GateError
    from distil.spec.gate import lock_gate, require_unchanged_gate

    lock_gate(load_project(triage_project), "maria")
    text = triage_project.read_text()
    triage_project.write_text(text.replace("teacher_per_1m_requests: 600", "teacher_per_1m_requests: 6000"))
    with pytest.raises(GateError, match="cost.teacher_per_1m_requests 600.0 → 6000.0"):
        require_unchanged_gate(load_project(triage_project))
    triage_project.write_text(text)
    assert require_unchanged_gate(load_project(triage_project)).cost["teacher_per_1m_requests"] == 600


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("cost", "teacher_per_1m_requests", ".inf"),
        ("cost", "build_cost", ".nan"),
        ("cost", "machine_hour_price", ".inf"),
        ("gate", "payback_months_max", ".inf"),
        ("gate", "p95_latency_max_ms", ".inf"),
    ],
)
def test_prices_and_thresholds_must_be_finite(section, field, value):
    text = (
        (EXAMPLES / "triage" / "distil.yaml")
        .read_text()
        .replace(f"\n{section}:\n", f"\n{section}:\n  {field}: {value}\n", 1)
    )
    text = _drop_later_duplicate(text, section, field)
    with pytest.raises(SpecError, match=f"{section}.{field} must be a finite number"):
        spec_from_text(text)


def _drop_later_duplicate(text: str, section: str, field: str) -> str:
    lines, seen, inside = [], False, False
    for line in text.splitlines(keepends=True):
        inside = line.startswith(f"{section}:") or (inside and line.startswith(" "))
        if inside and line.strip().startswith(f"{field}:"):
            if seen:
                continue
            seen = True
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize(
    ("validator", "why"),
    [
        ("dev\u200b", "invisible or control character"),
        ("d\u0435v", "mixes letters of several scripts"),
        ("dev\u00a0", "invisible"),
    ],
)
def test_role_names_that_could_pass_as_another_person_are_refused(validator, why):
    text = (
        (EXAMPLES / "triage" / "distil.yaml")
        .read_text()
        .replace("validator: quinn", f"validator: {json.dumps(validator)}")
    )
    with pytest.raises(SpecError, match=why):
        spec_from_text(text)


def test_role_names_are_compared_normalised():
    text = (
        (EXAMPLES / "triage" / "distil.yaml").read_text().replace("validator: quinn", "validator: ＤＥＶ")
    )  # full-width
    with pytest.raises(SpecError, match="roles.validator must differ from roles.driver"):
        spec_from_text(text)


def test_a_key_written_twice_is_refused_with_both_lines():
    text = (EXAMPLES / "triage" / "distil.yaml").read_text()
    first = text.splitlines().index("  fidelity_min: 0.95") + 1
    twice = text.replace("  fidelity_min: 0.95\n", "  fidelity_min: 0.95\n  fidelity_min: 0.5\n")
    with pytest.raises(
        SpecError, match=f"duplicate key 'fidelity_min' at line {first + 1} \\(first at line {first}\\)"
    ):
        spec_from_text(twice)
    gate_line = text.splitlines().index("gate:") + 1
    with pytest.raises(SpecError, match=f"duplicate key 'gate' at line .* \\(first at line {gate_line}\\)"):
        spec_from_text(text + "gate:\n  fidelity_min: 0.1\n")
