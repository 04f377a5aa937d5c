"""Shared fixtures. Tests never download: tiny random models are built from configs, and the home,
cache and identity are pointed at a temporary folder for every test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
TINY_TOKENIZER = ASSETS / "tiny-tokenizer"
TINY_WORDPIECE = ASSETS / "tiny-wordpiece" / "vocab.txt"
EXAMPLES = Path(__file__).parents[1] / "examples"
# The embedded teacher's dequantized cache is expensive to build (about 30 s), so the few tests that
# load the real teacher share one cache folder across the session instead of the per-test one.
SHARED_CACHE = Path(os.environ.get("DISTIL_TEST_SHARED_CACHE", Path.home() / ".cache" / "distil"))

# A slow test (a whole cadence, the real teacher) takes minutes, several times longer on a loaded two-core
# machine; the 600 s default of the other tests would fail it for the load, not for a fault.
SLOW_TIMEOUT_S = 1500


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch, request):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    if request.node.get_closest_marker("slow"):
        monkeypatch.setenv("DISTIL_CACHE", str(SHARED_CACHE))
    else:
        monkeypatch.setenv("DISTIL_CACHE", str(home / ".cache" / "distil"))
    monkeypatch.delenv("DISTIL_USER", raising=False)
    yield


def build_tiny_causal_lm(
    folder: Path, layers: int = 4, hidden: int = 64, seed: int = 0, vocab_size: int | None = None
) -> Path:
    """Save a random-weight Llama (hidden 64, 4 layers by default) with the tiny tokenizer into ``folder``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_TOKENIZER))
    config = LlamaConfig(
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_encoder(folder: Path, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random-weight BERT encoder (no head, like all-MiniLM-L6-v2) with a WordPiece tokenizer that
    differs from the tiny teacher's BPE into ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast(vocab=str(TINY_WORDPIECE), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder folder with its own WordPiece tokenizer, usable as ``student.path``."""
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    """A tiny random causal LM teacher folder, usable as ``hf:<path>``."""
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-teacher"), layers=4, seed=0)


@pytest.fixture
def triage_project(tmp_path) -> Path:
    """A copy of examples/triage in a temporary folder; returns the spec path."""
    target = tmp_path / "triage"
    shutil.copytree(EXAMPLES / "triage", target)
    return target / "distil.yaml"
