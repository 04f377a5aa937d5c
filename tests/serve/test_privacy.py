"""Traffic privacy: each kind of personal data the redactor claims is masked in a row written by the real
server; the sample rate holds statistically; retention deletes old shards; inputs can be dropped."""

from __future__ import annotations

import datetime as dt
import shutil

import httpx
import pytest
import torch

from distil.serve.redaction import TOKENS
from distil.serve.runs import load_served
from distil.serve.server import create_app
from distil.serve.traffic import TrafficLog, prune_traffic, read_traffic, shard_written_at, write_traffic_rows
from distil.spec.io import load_project
from tests.serve.conftest import running_server

# entity -> (a request that carries it, the personal data that must not reach the log)
CLAIMED = {
    "EMAIL_ADDRESS": ("please reply to dana.fox@example.org today", "dana.fox@example.org"),
    "PHONE_NUMBER": ("my phone is +44 20 7946 0958, call after five", "7946 0958"),
    "CREDIT_CARD": ("charged twice on card 4111 1111 1111 1111", "4111 1111 1111 1111"),
    "IBAN_CODE": ("refund to IBAN GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    "IP_ADDRESS": ("login blocked from 203.0.113.77 again", "203.0.113.77"),
    "US_SSN": ("tax form shows SSN 219-09-9999 wrongly", "219-09-9999"),
    "CRYPTO": ("paid from wallet 1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
    "PERSON": ("hello, my name is Dana Fox and I cannot log in", "Dana Fox"),
    "STREET_ADDRESS": ("the parcel went to 221B Baker Street instead", "Baker Street"),
    "POSTCODE": ("deliver to postcode SW1A 1AA next time", "SW1A 1AA"),
    "NUMBER": ("account 12345678 is locked", "12345678"),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_every_claimed_entity_is_masked_in_a_served_traffic_row(classify_project, tmp_path):
    assert set(CLAIMED) == set(TOKENS)  # a new claim needs a case here
    served = load_served(load_project(classify_project), "r1", threshold=0.0)
    log = TrafficLog(tmp_path / "traffic", redaction=True, flush_every_s=0)
    with running_server(create_app(served, traffic=log)) as (url, _):
        r = httpx.post(f"{url}/v1/classify", json={"input": [text for text, _ in CLAIMED.values()]}, timeout=60)
        assert r.status_code == 200
    rows = {row["input"]: row for row in read_traffic(tmp_path / "traffic")}
    assert len(rows) == len(CLAIMED)
    logged = list(rows)
    for (entity, (_, secret)), row in zip(CLAIMED.items(), logged, strict=True):
        assert secret not in row, f"{entity}: {secret!r} reached the log: {row!r}"
        assert TOKENS[entity] in row, f"{entity}: expected {TOKENS[entity]} in {row!r}"
    assert all(r["redacted"] for r in rows.values())


def test_ordinary_ticket_text_is_left_alone():
    from distil.serve.redaction import redact

    for text in (
        "I am Unable to open the invoice for order 42",
        "The app crashes on page 3 of 10",
        "Thanks for the quick fix!",
    ):
        assert redact(text) == text


def test_sample_rate_is_honoured_and_seeded(tmp_path):
    n, rate = 4000, 0.1  # kept ~ Binomial(4000, 0.1): mean 400, sd 19; the bounds are 5 sd out
    kept = []
    for run in range(2):
        folder = tmp_path / f"log{run}"
        with TrafficLog(folder, sample_rate=rate, seed=11, flush_every_s=0) as log:
            for i in range(n):
                log.record("/v1/classify", "r1", [f"t{i}"], ["student"], ["billing"], [[0.8, 0.1, 0.1]], [0.8])
        kept.append([r["input"] for r in read_traffic(folder)])
    assert 400 - 5 * 19 < len(kept[0]) < 400 + 5 * 19
    assert kept[0] == kept[1]  # the same seed keeps the same requests


def test_inputs_are_not_kept_when_the_spec_says_so(tmp_path):
    with TrafficLog(tmp_path, store_inputs=False, flush_every_s=0) as log:
        log.record("/v1/classify", "r1", ["my name is Dana Fox"], ["student"], ["billing"], [[0.8, 0.1, 0.1]], [0.8])
        log.record(
            "/v1/chat/completions", "r1", ["write to dana@example.org"], ["student"], ["Dear Dana Fox"], [None], [None]
        )
    rows = read_traffic(tmp_path)
    assert [(r["input"], r["answer"]) for r in rows] == [("", None), ("", None)]
    assert rows[0]["distribution"] is not None and rows[0]["confidence"] is not None


def test_retention_deletes_shards_older_than_the_limit(tmp_path):
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    fresh = write_traffic_rows(tmp_path, [{"timestamp": now, "input": "fresh"}])
    old = {}
    for days in (29, 31, 400):
        stamp = (now - dt.timedelta(days=days)).strftime("%Y%m%dT%H%M%S%f")
        old[days] = shutil.copy(fresh, tmp_path / f"traffic-{stamp}-{days:08d}.parquet")
    assert shard_written_at(old[31]) == now - dt.timedelta(days=31)
    deleted = prune_traffic(tmp_path, 30, now=now)
    assert sorted(p.name for p in deleted) == sorted(old[d].name for d in (31, 400))
    assert fresh.exists() and old[29].exists() and not old[31].exists()
    assert prune_traffic(tmp_path, None, now=now + dt.timedelta(days=9999)) == []  # null retention keeps all
