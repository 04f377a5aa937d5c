"""Near-duplicate detection: planted duplicates are found, distinct texts are not, groups are transitive."""

from __future__ import annotations

import random

from distil.data import dedupe

WORDS = "billing invoice refund card charge account login password email app crash error page upload export report plan yearly monthly team".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(14)) + f" ref{i}" for i in range(n)]


def test_planted_near_duplicates_are_paired_and_distinct_texts_are_not():
    base = _texts(200)
    planted = {}
    texts = list(base)
    for i in range(0, 200, 20):
        words = base[i].split()
        words[-1] = words[-1] + "x"  # one word changed out of fifteen
        planted[len(texts)] = i
        texts.append(" ".join(words))
    pairs = {(i, j) for i, j, _ in dedupe.near_duplicate_pairs(texts, threshold=0.7)}
    for dup, original in planted.items():
        assert (original, dup) in pairs
    for i, j in pairs:
        assert dedupe.jaccard(texts[i], texts[j]) >= 0.5  # estimates stay near the exact Jaccard
    assert len(pairs) == len(planted)


def test_exact_duplicates_ignore_case_and_punctuation():
    groups = dedupe.near_duplicate_groups(["Hello, World!", "hello world", "something else entirely here"], 0.9)
    assert groups == [0, 0, 2]


def test_groups_follow_chains():
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = a.replace("today", "tonight")
    c = b.replace("river", "lake")
    groups = dedupe.near_duplicate_groups([a, "unrelated words that share nothing at all with it", b, c], 0.6)
    assert groups[0] == groups[2] == groups[3] == 0 and groups[1] == 1


def test_contaminated_finds_references():
    refs = ["my invoice shows the wrong amount for march", "the app crashes on start"]
    cands = ["My invoice shows the wrong amount for March!", "please reset my password", "the app crashes on start today"]
    hits = dedupe.contaminated(cands, refs, threshold=0.6)
    assert hits[0] == 0 and hits[1] is None and hits[2] == 1


def test_semantic_pairs_from_unit_vectors():
    import numpy as np

    vecs = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert dedupe.semantic_duplicate_pairs(vecs, 0.99) == [(0, 1)]


def test_minilm_embeddings_pair_paraphrases_not_unrelated_texts():
    import numpy as np

    texts = ["I was charged twice for my subscription.", "My subscription was billed two times.", "The app crashes when I open settings."]
    vectors = dedupe.embed(texts)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert dedupe.semantic_duplicate_pairs(vectors, float(sims[0, 1]) - 1e-4) == [(0, 1)]
