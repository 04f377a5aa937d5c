"""Near-duplicate detection (MinHash LSH over word shingles): recall, precision and time, old against new.

Old: LSH tuned at the threshold, candidates confirmed by their MinHash estimate (what curate did before).
New: LSH banded so a pair at the threshold is proposed with probability >= 0.995, candidates confirmed by
the exact word-shingle Jaccard (:func:`distil.data.dedupe.near_duplicate_pairs`). The truth is the exact
Jaccard of every pair of texts that share at least one shingle (every other pair has Jaccard 0).

Usage: python benchmarks/data_dedupe.py [--sizes 100000] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, write_section  # noqa: E402

from distil.data.dedupe import NUM_PERM, minhashes, near_duplicate_pairs, normalise, word_shingles  # noqa: E402


def short_texts(n: int, seed: int = 0, dup_rate: float = 0.05) -> list[str]:
    """Ticket-like texts of 8-20 words from a 5,000-word vocabulary, with ``dup_rate`` planted near-duplicates:
    an earlier text with one word added, one replaced, or one replaced and one added (Jaccard about 0.6-0.95)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < dup_rate:
            words = rng.choice(out).split()
            edit = rng.randrange(3)
            if edit >= 1:
                words[rng.randrange(len(words))] = rng.choice(vocab)
            if edit != 1:
                words.append(rng.choice(vocab))
            out.append(" ".join(words))
        else:
            out.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(8, 20))))
    return out


def old_near_duplicate_pairs(
    texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM
) -> list[tuple[int, int, float]]:
    """The previous method: LSH at the threshold itself, confirmed by the MinHash estimate."""
    from datasketch import MinHashLSH

    hashes = minhashes(texts, num_perm)
    exact: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    unique: list[int] = []
    for i, text in enumerate(texts):
        key = normalise(text)
        if key in exact:
            pairs.append((exact[key], i, 1.0))
        else:
            exact[key] = i
            unique.append(i)
    with lsh.insertion_session() as session:
        for i in unique:
            session.insert(i, hashes[i], check_duplication=False)
    for i in unique:
        for j in lsh.query(hashes[i]):
            if j > i:
                score = hashes[i].jaccard(hashes[j])
                if score >= threshold:
                    pairs.append((i, j, float(score)))
    return pairs


def exact_pairs(texts: Sequence[str], threshold: float) -> set[tuple[int, int]]:
    """Every pair whose exact shingle Jaccard is >= threshold (pairs that share no shingle have Jaccard 0)."""
    shingles = [word_shingles(t) for t in texts]
    index: dict[bytes, list[int]] = defaultdict(list)
    for i, s in enumerate(shingles):
        for g in s:
            index[g].append(i)
    candidates = {(a, b) for ids in index.values() for k, a in enumerate(ids) for b in ids[k + 1 :]}
    return {
        (i, j) for i, j in candidates if len(shingles[i] & shingles[j]) / len(shingles[i] | shingles[j]) >= threshold
    }


def measure(
    method: Callable, texts: list[str], threshold: float, repeats: int, truth: set[tuple[int, int]]
) -> tuple[float, float, float]:
    """(median seconds, recall, precision) of one method."""
    times, found = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        found = {(i, j) for i, j, _ in method(texts, threshold)}
        times.append(time.perf_counter() - start)
    hit = len(found & truth)
    return statistics.median(times), hit / max(len(truth), 1), hit / max(len(found), 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    load_before = os.getloadavg()[0]
    for n in args.sizes:
        texts = short_texts(n)
        truth = exact_pairs(texts, args.threshold)
        old_s, old_r, old_p = measure(old_near_duplicate_pairs, texts, args.threshold, args.repeats, truth)
        new_s, new_r, new_p = measure(near_duplicate_pairs, texts, args.threshold, args.repeats, truth)
        rows.append(
            [
                f"{n:,}",
                f"{len(truth):,}",
                f"{old_s:.1f}",
                f"{old_r:.3f}",
                f"{old_p:.3f}",
                f"{new_s:.1f}",
                f"{new_r:.3f}",
                f"{new_p:.3f}",
                f"{new_s / old_s:.2f}x",
            ]
        )
        print(
            f"{n}: {len(truth)} true pairs; old {old_s:.2f}s recall {old_r:.3f} precision {old_p:.3f}; new "
            f"{new_s:.2f}s recall {new_r:.3f} precision {new_p:.3f}",
            flush=True,
        )
    load_after = os.getloadavg()[0]
    body = (
        f"Near-duplicate pairs at word-shingle Jaccard ≥ {args.threshold} (datasketch MinHash, {NUM_PERM} "
        "permutations, word 2-shingles) on synthetic short texts (8-20 words from 5,000 words; 5% planted "
        "near-duplicates: an earlier text with a word added, replaced, or both). Old: LSH tuned at the threshold, "
        "candidates kept on their MinHash estimate. New (`near_duplicate_pairs`): LSH banded so a pair at the "
        "threshold is proposed with probability ≥ 0.995, every candidate confirmed by the exact Jaccard. Truth: the "
        f"exact Jaccard of every pair sharing a shingle. Median of {args.repeats} runs each. Target: new ≤ 1.5x the "
        f"old time. Load average (1 min) while measuring, the machine being shared: {load_before:.1f} before, "
        f"{load_after:.1f} after.\n\n"
        + markdown_table(
            [
                "texts",
                "true pairs",
                "old s",
                "old recall",
                "old precision",
                "new s",
                "new recall",
                "new precision",
                "new / old time",
            ],
            rows,
        )
    )
    if not args.no_write:
        write_section("data_dedupe", "Near-duplicate detection: recall, precision, time", body)


if __name__ == "__main__":
    main()
