"""Near-duplicate detection: planted duplicates are found, distinct texts are not, groups are transitive."""

from __future__ import annotations

import random

from distil.data import dedupe

WORDS = (
    "billing invoice refund card charge account login password email app crash error page upload export report plan "
    "yearly monthly team"
).split()


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
        assert dedupe.jaccard(texts[i], texts[j]) >= 0.7  # every reported pair is confirmed by the exact Jaccard
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
    cands = [
        "My invoice shows the wrong amount for March!",
        "please reset my password",
        "the app crashes on start today",
    ]
    hits = dedupe.contaminated(cands, refs, threshold=0.6)
    assert hits[0] == 0 and hits[1] is None and hits[2] == 1


def test_semantic_pairs_from_unit_vectors():
    import numpy as np

    vecs = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert dedupe.semantic_duplicate_pairs(vecs, 0.99) == [(0, 1)]


def test_minilm_embeddings_pair_paraphrases_not_unrelated_texts():
    import numpy as np

    texts = [
        "I was charged twice for my subscription.",
        "My subscription was billed two times.",
        "The app crashes when I open settings.",
    ]
    vectors = dedupe.embed(texts)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert dedupe.semantic_duplicate_pairs(vectors, float(sims[0, 1]) - 1e-4) == [(0, 1)]


def _planted_around_threshold(n_base: int = 240, seed: int = 1) -> list[str]:
    """Distinct 20-word texts plus edited copies whose Jaccard with their original falls on both sides of 0.8."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    base = [" ".join(rng.choice(vocab) for _ in range(20)) for _ in range(n_base)]
    texts = list(base)
    for i, original in enumerate(base):
        words = original.split()
        for _ in range(i % 4):  # 0-3 words replaced: Jaccard about 1.0, 0.81, 0.66, 0.54 (or higher at the ends)
            words[rng.randrange(len(words))] = rng.choice(vocab)
        if i % 5 == 0:
            words.append(rng.choice(vocab))  # one word added: another step of about 0.05
        texts.append(" ".join(words))
    rng.shuffle(texts)
    return texts


def _exact_pairs(texts: list[str], threshold: float) -> set[tuple[int, int]]:
    return {
        (i, j)
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if dedupe.jaccard(texts[i], texts[j]) >= threshold
    }


def test_near_duplicate_pairs_match_exact_all_pairs_jaccard():
    texts = _planted_around_threshold()
    truth = _exact_pairs(texts, 0.8)
    near_threshold = [p for p in truth if dedupe.jaccard(texts[p[0]], texts[p[1]]) < 0.86]
    assert len(truth) > 100 and len(near_threshold) > 30  # many pairs sit just above the threshold
    found = {(i, j) for i, j, _ in dedupe.near_duplicate_pairs(texts, 0.8)}
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / max(len(found), 1)
    assert recall >= 0.99 and precision == 1.0, (recall, precision)


def test_contaminated_matches_exact_jaccard_against_references():
    texts = _planted_around_threshold(seed=2)
    references, candidates = texts[::2], texts[1::2]
    truth = {i for i, c in enumerate(candidates) if any(dedupe.jaccard(c, r) >= 0.8 for r in references)}
    assert len(truth) > 30
    hits = dedupe.contaminated(candidates, references, 0.8)
    flagged = {i for i, h in enumerate(hits) if h is not None}
    assert len(flagged & truth) / len(truth) >= 0.99 and flagged <= truth
    assert all(dedupe.jaccard(candidates[i], references[hits[i]]) >= 0.8 for i in flagged)


def test_candidate_bands_propose_a_pair_at_the_threshold_almost_surely():
    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands, rows = dedupe.candidate_bands(threshold)
        assert bands * rows <= dedupe.NUM_PERM
        assert 1 - (1 - threshold**rows) ** bands >= dedupe.CANDIDATE_RECALL
        # one row more would fall short: the banding is the most selective that keeps the recall
        more = dedupe.NUM_PERM // (rows + 1)
        assert 1 - (1 - threshold ** (rows + 1)) ** more < dedupe.CANDIDATE_RECALL
