"""The compact teacher-cache row: 100 bytes at k = 50 on a 49,152-token vocabulary, ids exact, log-probabilities
within a measured KL of the exact top-k on a real model's outputs, the tail kept; first-format caches still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distil.errors import TrainError
from distil.train.compact_topk import RowLayout, compression_kl, decode_rows, encode_rows
from distil.train.logit_cache import TopkCache, bytes_per_token

torch.set_num_threads(1)


def random_rows(n: int, k: int, vocab: int, sharpness: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of softmax(sharpness · N(0, 1)) over ``vocab``: exact float32 log-probabilities, most likely first."""
    logits = torch.randn(n, vocab, generator=torch.Generator().manual_seed(seed)) * sharpness
    top = torch.log_softmax(logits, -1).topk(k, dim=-1)
    return top.indices.numpy(), top.values.numpy()


def test_fifty_entries_of_a_49k_vocabulary_take_100_bytes():
    assert RowLayout(50, 49152).row_bytes == 100 == bytes_per_token(50, 49152)
    assert RowLayout(32, 49152).row_bytes < 70  # 192 bytes in the first format
    assert RowLayout(50, 151_936).row_bytes <= 110  # past 65,536 ids, where 16-bit ids no longer fit


@pytest.mark.parametrize(("k", "vocab"), [(1, 8), (7, 8), (8, 8), (8, 512), (50, 49152), (20, 151_936)])
def test_ids_come_back_exactly_and_the_tail_as_kept(k, vocab):
    ids, logprobs = random_rows(64, k, vocab, sharpness=3.0, seed=k)
    layout = RowLayout(k, vocab)
    rows = encode_rows(ids, logprobs, layout)
    assert rows.dtype == np.uint8 and rows.shape == (64, layout.row_bytes)
    got_ids, got_logprobs = decode_rows(rows, layout)
    assert np.array_equal(np.sort(got_ids, 1), np.sort(ids, 1))
    assert (np.diff(got_logprobs, axis=1) <= 0).all()  # most likely first
    exact_tail = 1 - np.exp(logprobs.astype(np.float64)).sum(1)
    kept_tail = 1 - np.exp(got_logprobs.astype(np.float64)).sum(1)
    np.testing.assert_allclose(kept_tail, exact_tail, rtol=0.05, atol=1e-6)


def real_teacher_rows(tmp_path, k: int, sharpen: float) -> tuple[np.ndarray, np.ndarray]:
    """A real model's top-k at every position of real text: the tiny Llama, its head scaled by ``sharpen`` (a
    trained model is far more certain than a random one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import build_tiny_causal_lm

    folder = build_tiny_causal_lm(tmp_path / "m", layers=2, hidden=64, seed=3)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    text = "ticket billing refund invoice charged twice payment card plan subscription login password reset " * 4
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer(text).input_ids])).logits[0] * sharpen
    top = torch.log_softmax(logits.float(), -1).topk(k, dim=-1)
    return top.indices.numpy(), top.values.numpy()


@pytest.mark.parametrize(("sharpen", "mean_bound", "max_bound"), [(1.0, 1e-3, 5e-3), (30.0, 1e-2, 5e-2)])
def test_kl_from_the_exact_top_k_is_small_on_a_real_models_outputs(tmp_path, sharpen, mean_bound, max_bound):
    ids, logprobs = real_teacher_rows(tmp_path, 50, sharpen)
    layout = RowLayout(50, 512)
    kl = compression_kl(ids, logprobs, *decode_rows(encode_rows(ids, logprobs, layout), layout))
    assert (kl >= -1e-12).all() and kl.mean() < mean_bound and kl.max() < max_bound, (kl.mean(), kl.max())


def test_the_kl_is_measured_not_assumed():
    """The check can fail: the same rows with their levels scrambled are far from the exact ones."""
    ids, logprobs = random_rows(32, 50, 49152, sharpness=4.0)
    layout = RowLayout(50, 49152)
    got_ids, got_logprobs = decode_rows(encode_rows(ids, logprobs, layout), layout)
    assert compression_kl(ids, logprobs, got_ids, got_logprobs).mean() < 1e-2
    scrambled = got_logprobs[:, np.random.default_rng(0).permutation(50)]
    assert compression_kl(ids, logprobs, got_ids, scrambled).mean() > 0.1


def write_first_format(folder, ids: np.ndarray, logprobs: np.ndarray, offsets: np.ndarray) -> None:
    """A cache as distil wrote it before format 2: int32 ids, float16 log-probabilities, no format in the index."""
    folder.mkdir(parents=True)
    np.save(folder / "ids.npy", ids.astype(np.int32))
    np.save(folder / "logprobs.npy", logprobs.astype(np.float16))
    np.save(folder / "offsets.npy", offsets)
    index = {"fingerprint": "x", "k": ids.shape[1], "tokens": len(ids), "examples": len(offsets) - 1}
    (folder / "index.json").write_text(json.dumps({**index, "bytes_per_token": 6 * ids.shape[1]}))


def test_a_first_format_cache_is_still_read_and_a_newer_one_refused(tmp_path):
    ids, logprobs = random_rows(10, 8, 512, sharpness=2.0)
    write_first_format(tmp_path / "old", ids, logprobs, np.array([0, 4, 10]))
    cache = TopkCache.open(tmp_path / "old")
    assert cache.format == 1 and cache.k == 8 and cache.bytes_per_token == 48 and len(cache) == 2
    got_ids, got_logprobs = cache.example(1)
    assert np.array_equal(got_ids, ids[4:]) and got_logprobs.dtype == np.float32
    np.testing.assert_allclose(got_logprobs, logprobs[4:], atol=1e-2)
    assert isinstance(cache.arrays["ids"], np.memmap)
    index = json.loads((tmp_path / "old" / "index.json").read_text())
    (tmp_path / "old" / "index.json").write_text(json.dumps({**index, "format": 99}))
    with pytest.raises(TrainError, match="format 99 is newer"):
        TopkCache.open(tmp_path / "old")


def test_a_new_cache_stays_memory_mapped_and_records_its_kl(tmp_path):
    from transformers import AutoModelForCausalLM

    from distil.train.batches import GenerateExamples
    from distil.train.logit_cache import build_topk_cache
    from tests.conftest import build_tiny_causal_lm

    model = AutoModelForCausalLM.from_pretrained(str(build_tiny_causal_lm(tmp_path / "m", layers=1, hidden=32)))
    examples = GenerateExamples([[5, 6, 7], [8, 9]], [[10, 11, 12, 2], [13, 2]])
    cache = build_topk_cache(model, "sha256:x", examples, 50, tmp_path / "cache")
    index = json.loads((cache.folder / "index.json").read_text())
    assert index["format"] == 2 and index["bytes_per_token"] == RowLayout(50, 512).row_bytes == cache.bytes_per_token
    assert isinstance(TopkCache.open(cache.folder).arrays["rows"], np.memmap)
    ids, logprobs = cache.example(1)
    assert ids.shape == logprobs.shape == (2, 50)
    assert 0 <= index["kl_mean"] <= index["kl_max"] < 1e-2
