"""Bad input, fuzzed: seeds and traffic importers, `distil generate` on a broken seeds file, and the server's
request bodies. Every case is a DataError / one-line CLI error (exit 2) or a 4xx, never a traceback or a
5xx, and files written before are untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distil.data.sources import read_inputs, read_traffic
from distil.errors import DistilError
from tests.reliability.fault_server import FaultConfig, FaultServer
from tests.reliability.helpers import fault_project, run_cli

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
rows = st.dictionaries(
    st.sampled_from(["input", "label", "tags", "timestamp", "messages", "ts", "x"]), json_values, max_size=5
)
lines = st.one_of(
    rows.map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),  # any bytes: bad encodings, broken JSON
    st.just(b""),
    st.just(b"   "),
    st.just(json.dumps({"input": "x" * 200_000}).encode()),  # a huge line
    st.just('{"input": "caf\xe9"}'.encode("latin-1")),  # latin-1, not UTF-8
)


def _expect_clean(call) -> None:  # noqa: ANN001
    try:
        call()
    except DistilError as exc:
        assert exc.message and "\n" not in exc.message.strip()


@FUZZ
@given(body=st.lists(lines, max_size=6))
def test_jsonl_seeds_and_traffic_fail_only_with_a_data_error(tmp_path_factory, body):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "seeds.jsonl"
    path.write_bytes(b"\n".join(body))
    _expect_clean(lambda: read_inputs(path, labels=["billing", "technical", "account"]))
    _expect_clean(lambda: read_inputs(path, need_label=True))
    _expect_clean(lambda: read_traffic(path, since="90d"))


@FUZZ
@given(
    header=st.lists(st.sampled_from(["input", "label", "tags", "", "x", "input"]), max_size=4),
    cells=st.lists(
        st.lists(st.text(max_size=15) | st.binary(max_size=15).map(lambda b: b.decode("latin-1")), max_size=5),
        max_size=5,
    ),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
)
def test_csv_seeds_fail_only_with_a_data_error(tmp_path_factory, header, cells, encoding):
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(cells)
    path = tmp_path_factory.mktemp("fuzz") / "seeds.csv"
    path.write_bytes(out.getvalue().encode(encoding, errors="replace"))
    _expect_clean(lambda: read_inputs(path, labels=["billing", "technical", "account"]))


@pytest.mark.parametrize("stamp", ["NaN", "Infinity", "1e300", "-1e300", "true", "[]"])
def test_traffic_with_an_impossible_timestamp_is_a_data_error(tmp_path, stamp):
    path = tmp_path / "traffic.jsonl"
    path.write_text('{"input": "hello", "timestamp": ' + stamp + "}\n")
    with pytest.raises(DistilError, match="timestamp"):
        read_traffic(path)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xfe not utf-8\n",
        b'{"input": 3}\n',
        b'{"label": "billing"}\n',
        b'["a list"]\n',
        b'{"input": "ok", "label": "refunds"}\n',
        b'{"input": "ok", "tags": "{not json"}\n',
    ],
)
def test_generate_on_a_broken_seeds_file_is_one_line_and_keeps_earlier_data(tmp_path, bad):
    with FaultServer(FaultConfig()) as server:
        spec = fault_project(tmp_path / "p", server.source(), 12, timeout_s=5)
        assert run_cli("generate", "--spec", str(spec)).returncode == 0
        before = _hashes(spec.parent / ".distil" / "data")
        seeds = spec.parent / "seeds.jsonl"
        seeds.write_bytes(seeds.read_bytes() + bad)
        done = run_cli("generate", "--spec", str(spec))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")][0].startswith(
        f"error: {seeds}:13"
    ) or "UTF-8" in done.stderr
    assert _hashes(spec.parent / ".distil" / "data") == before


# --- the server's request bodies ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(tmp_path_factory, tiny_teacher_dir):
    from distil.serve.runs import load_served
    from distil.serve.server import create_app
    from distil.spec.io import load_project
    from tests.serve.conftest import make_classify_project, running_server

    torch.set_num_threads(1)
    project = load_project(make_classify_project(tmp_path_factory.mktemp("serve"), tiny_teacher_dir))
    with running_server(create_app(load_served(project, "r1", threshold=0.0), max_body_bytes=64 * 1024)) as (url, _):
        yield url


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["input", "model", "messages", "max_tokens", "temperature", "stream", "labels"]),
        json_values,
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries(
        {
            "messages": st.lists(
                st.dictionaries(st.sampled_from(["role", "content", "name"]), json_values, max_size=3), max_size=3
            )
        }
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=80),
    st.just(json.dumps({"input": "x" * 200_000}).encode()),  # past the body limit
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(["/v1/classify", "/v1/chat/completions"]), body=bodies)
def test_server_request_bodies_never_give_a_5xx(server_url, endpoint, body):
    response = httpx.post(server_url + endpoint, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert "error" in response.json()
