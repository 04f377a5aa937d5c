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


FIRST_SHARD = """
import sys
from distil.serve.traffic import TrafficLog
log = TrafficLog(sys.argv[1], flush_every_s=0)
log.warm_up()
loaded = set(sys.modules)
log.record("/v1/classify", "r1", ["mail a@b.example"], ["student"], ["billing"], [[0.8, 0.1, 0.1]], [0.8])
log.flush()
print(" ".join(sorted(m.split(".")[0] for m in set(sys.modules) - loaded)))
"""


def test_a_warmed_up_log_writes_its_first_shard_without_loading_anything(tmp_path):
    """A server warms its log up before it listens: the first shard, written under load, must not import pyarrow's
    pandas support then (40 MiB and a stall while serving). A fresh interpreter, as `distil serve` starts one."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_SHARD, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []
    assert len(read_traffic(tmp_path)) == 1
