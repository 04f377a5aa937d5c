from __future__ import annotations

import time

from distil.serve.traffic import TrafficLog, read_traffic, redact


def test_redaction_masks_emails_phones_and_long_digit_runs_only():
    text = "Mail jo.doe+x@corp.example.org or call +1 (415) 555-0134; card 4111111111111111, order 42, 3 items"
    out = redact(text)
    assert "[EMAIL]" in out and "jo.doe" not in out
    assert "[PHONE]" in out and "555-0134" not in out
    assert "4111" not in out
    assert "order 42" in out and "3 items" in out  # short numbers carry meaning and stay


def _log(log: TrafficLog, n: int, prefix: str = "t") -> None:
    for i in range(n):
        log.record("/v1/classify", "r1", [f"{prefix}{i}"], ["student"], ["billing"], [[0.8, 0.1, 0.1]], [0.8])


def test_flushes_every_n_rows_and_on_close(tmp_path):
    log = TrafficLog(tmp_path, flush_every_n=10, flush_every_s=0)
    _log(log, 25)
    assert len(log.shards) == 2 and len(read_traffic(tmp_path)) == 20  # 5 still buffered
    log.close()
    assert [r["input"] for r in read_traffic(tmp_path)] == [f"t{i}" for i in range(25)]
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written files left behind


def test_flushes_on_a_timer(tmp_path):
    log = TrafficLog(tmp_path, flush_every_n=1000, flush_every_s=0.05)
    _log(log, 3)
    deadline = time.monotonic() + 10
    while not read_traffic(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(read_traffic(tmp_path)) == 3
    log.close()


def test_sample_rate_keeps_about_that_share(tmp_path):
    with TrafficLog(tmp_path, sample_rate=0.25, seed=3, flush_every_s=0) as log:
        _log(log, 2000)
    kept = len(read_traffic(tmp_path))
    assert 400 < kept < 600
    with TrafficLog(tmp_path / "none", sample_rate=0.0, flush_every_s=0) as log:
        _log(log, 50)
    assert read_traffic(tmp_path / "none") == []
