from __future__ import annotations

import threading

import numpy as np
import pytest

from distil.serve.batching import MicroBatcher


def _probs(texts):
    """A deterministic 'model': each text's distribution depends on its length only."""
    lengths = np.array([len(t) for t in texts], dtype=np.float64)
    return (
        np.stack([lengths % 3 + 1, lengths % 5 + 1, np.ones_like(lengths)], axis=1)
        / (lengths % 3 + lengths % 5 + 3)[:, None]
    )


def test_concurrent_callers_share_passes_and_get_their_own_rows():
    sizes = []

    def model(texts):
        sizes.append(len(texts))
        return _probs(texts)

    batcher = MicroBatcher(model, max_batch=16, max_wait_s=0.05)
    requests = [["x" * (i + j) for j in range(1 + i % 3)] for i in range(24)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(requests))

    def call(i):
        barrier.wait()
        results[i] = batcher.label_distribution(requests[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.stop()
    for i, texts in enumerate(requests):
        np.testing.assert_allclose(results[i], _probs(texts))
    assert sum(sizes) == sum(len(r) for r in requests)
    assert batcher.passes == len(sizes) < len(requests)  # requests were merged
    assert max(sizes) <= 16


def test_a_failing_pass_fails_its_callers_and_the_batcher_keeps_working():
    calls = {"n": 0}

    def model(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("boom")
        return _probs(texts)

    batcher = MicroBatcher(model, max_wait_s=0.0)
    with pytest.raises(ValueError, match="boom"):
        batcher.label_distribution(["a"])
    np.testing.assert_allclose(batcher.label_distribution(["abc"]), _probs(["abc"]))
    batcher.stop()
