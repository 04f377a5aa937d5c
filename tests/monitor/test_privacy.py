"""The monitor report keeps only the traffic text the spec allows, whatever the log holds."""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from distil.errors import DataError
from distil.monitor.check import run_monitor
from distil.serve.traffic import TrafficLog, traffic_dir
from distil.spec.io import load_project
from tests.monitor.test_drift import _teacher, log_traffic, monitored  # noqa: F401 (monitored is a fixture)

SECRETS = [
    "my name is Dana Fox and my card 4111 1111 1111 1111 was charged twice",
    "reply to dana.fox@example.org, the export crashes",
]


def _with_maintenance(project, **settings):
    spec = yaml.safe_load(project.spec_path.read_text())
    spec["maintenance"] = {**spec["maintenance"], **settings}
    project.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_project(project.spec_path)


@pytest.mark.parametrize("store_inputs", [True, False])
def test_monitor_never_copies_text_the_spec_drops(monitored, store_inputs):  # noqa: F811
    project, texts = monitored
    teacher = _teacher(project)
    log_traffic(project, SECRETS * 3 + texts[:6], teacher)  # logged raw, before the spec asked for redaction
    project = _with_maintenance(project, redact=True, store_inputs=store_inputs)
    result, path = run_monitor(project, teacher=teacher.label_distribution, record=False)
    report = path.read_text()
    assert result.n_sampled == len(SECRETS) * 3 + 6  # checked in memory all the same
    for secret in ("Dana Fox", "4111 1111 1111 1111", "dana.fox@example.org"):
        assert secret not in report
    if store_inputs:
        assert "[PERSON]" in report and "[EMAIL]" in report
    else:
        assert all(e["input"] is None for e in result.examples)


def test_monitor_explains_a_log_without_text(monitored):  # noqa: F811
    project, _ = monitored
    with TrafficLog(traffic_dir(project.state_dir), store_inputs=False, flush_every_s=0) as log:
        log.record("/v1/classify", "r1", ["my name is Dana Fox"], ["student"], ["billing"], [[0.8, 0.1, 0.1]], [0.8])
    with pytest.raises(DataError, match="store_inputs"):
        run_monitor(project, now=dt.datetime.now(dt.UTC))
