"""Cross-tokenizer distillation: text alignment by character offsets and the ULD loss against a float64
reference written from the definition (merged group distributions, sorted, L1 over ranks plus the tail)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distil.train import losses as L
from distil.train.alignment import UNALIGNED, answer_with_ends, text_groups
from tests.conftest import ASSETS, TINY_TOKENIZER

torch.set_num_threads(1)
TINY_METASPACE = ASSETS / "tiny-metaspace"


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_TOKENIZER)), AutoTokenizer.from_pretrained(str(TINY_METASPACE))


# --- alignment ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [" refund crash login", " reset your password now", " Payment card, thanks! 42", " café naïve résumé", " a"],
)
def test_matched_groups_carry_the_same_text(tokenizers, text):
    teacher, student = tokenizers
    s_ids, s_ends = answer_with_ends(student, text)
    t_ids, t_ends = answer_with_ends(teacher, text)
    s_groups, t_groups = text_groups(s_ends, t_ends)
    assert (s_groups >= 0).all() and (t_groups >= 0).all()  # both sides cover the whole text and EOS
    assert s_groups.max() == t_groups.max() and (np.diff(s_groups) >= 0).all() and (np.diff(t_groups) >= 0).all()

    def spans(ends, groups):
        """Each group's text: from the previous group's end to its last token's end."""
        out, start = [], 0
        for g in range(int(groups.max()) + 1):
            end = max(e for e, gg in zip(ends, groups, strict=True) if gg == g)
            out.append(text[start:end] if end <= len(text) else "<eos>")
            start = min(end, len(text))
        return out

    assert spans(s_ends, s_groups) == spans(t_ends, t_groups)
    assert "".join(spans(s_ends, s_groups)[:-1]) == text  # the groups tile the text, EOS last on its own
    assert s_ids[-1] == student.eos_token_id and t_ids[-1] == teacher.eos_token_id
    assert s_groups[-1] == t_groups[-1] and (s_groups == s_groups[-1]).sum() == 1 == (t_groups == t_groups[-1]).sum()


def test_tokenizers_split_differently_so_groups_merge_tokens(tokenizers):
    teacher, student = tokenizers
    _, s_ends = answer_with_ends(student, " refund crash login")
    _, t_ends = answer_with_ends(teacher, " refund crash login")
    s_groups, t_groups = text_groups(s_ends, t_ends)
    assert len(t_groups) > len(s_groups)  # the teacher splits "refund" in two: one group, two teacher tokens
    assert np.bincount(t_groups).max() >= 2 and np.bincount(s_groups).max() == 1


def test_a_shorter_side_leaves_the_rest_unaligned(tokenizers):
    teacher, student = tokenizers
    _, s_ends = answer_with_ends(student, " reset your password now", limit=2)
    _, t_ends = answer_with_ends(teacher, " reset your password now")
    s_groups, t_groups = text_groups(s_ends, t_ends)
    assert (s_groups >= 0).all()
    assert (t_groups == UNALIGNED).sum() > 0 and t_groups.max() == s_groups.max()


def test_a_character_split_over_bytes_stays_in_one_group():
    # three tokens of one character (a byte-level split) share its end; the other side has the character whole
    s_groups, t_groups = text_groups([3, 4, 4, 4, 6], [3, 4, 6])
    assert s_groups.tolist() == [0, 1, 1, 1, 2] and t_groups.tolist() == [0, 1, 2]


# --- the loss against a float64 reference ---------------------------------------------------------------------


def softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def merged(probs: np.ndarray, tokens: list[int], positions: list[int]) -> np.ndarray:
    """A group's distribution: the first position's, times the probability of the group's other actual tokens."""
    chain = np.prod([probs[j, tokens[j]] for j in positions[1:]]) if len(positions) > 1 else 1.0
    return probs[positions[0]] * chain


def reference_uld(s_probs, s_tokens, s_groups, t_probs, t_tokens, t_groups, k) -> float:
    """Σ over groups of Σ_{i<k} |s_(i) - t_(i)| + |tail_s - tail_t|, divided by the number of groups, in float64."""
    total, n = 0.0, 0
    for g in sorted(set(s_groups) - {UNALIGNED}):
        s = merged(s_probs, s_tokens, [i for i, x in enumerate(s_groups) if x == g])
        t = merged(t_probs, t_tokens, [i for i, x in enumerate(t_groups) if x == g])
        s_sorted, t_sorted = np.sort(s)[::-1], np.sort(t)[::-1]
        s_top = np.pad(s_sorted[:k], (0, max(0, k - len(s_sorted))))
        t_top = t_sorted[:k]
        total += np.abs(s_top - t_top).sum() + abs((s.sum() - s_top.sum()) - (t.sum() - t_top.sum()))
        n += 1
    return total / max(n, 1)


def teacher_side(t_probs: np.ndarray, t_tokens: list[int], t_groups: list[int], k: int):
    """What the cache gives the loss: per group the teacher's top-k log-probs at its first token and the chain."""
    rows, chains = [], []
    for g in range(max(t_groups) + 1):
        positions = [i for i, x in enumerate(t_groups) if x == g]
        rows.append(np.log(np.sort(t_probs[positions[0]])[::-1][:k]))
        chains.append(sum(np.log(t_probs[j, t_tokens[j]]) for j in positions[1:]))
    return torch.tensor(np.array(rows), dtype=torch.float32), torch.tensor(chains, dtype=torch.float32)


def random_case(seed: int, v_s: int = 11, v_t: int = 17):
    rng = np.random.default_rng(seed)
    s_groups = [0, 1, 1, 2, 3, 3, 3, UNALIGNED]  # the last student token is past the teacher's text
    t_groups = [0, 0, 1, 2, 2, 3]
    s_logits = rng.normal(size=(len(s_groups), v_s)) * 2
    t_logits = rng.normal(size=(len(t_groups), v_t)) * 2
    s_tokens = rng.integers(0, v_s, len(s_groups)).tolist()
    t_tokens = rng.integers(0, v_t, len(t_groups)).tolist()
    return s_logits, s_tokens, s_groups, t_logits, t_tokens, t_groups


@pytest.mark.parametrize("k", [1, 4, 11, 17])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uld_matches_the_float64_reference(seed, k):
    s_logits, s_tokens, s_groups, t_logits, t_tokens, t_groups = random_case(seed)
    t_probs = softmax64(t_logits)
    want = reference_uld(softmax64(s_logits), s_tokens, s_groups, t_probs, t_tokens, t_groups, k)
    t_rows, t_chain = teacher_side(t_probs, t_tokens, t_groups, k)
    got = L.uld_loss(
        torch.tensor(s_logits, dtype=torch.float32), torch.tensor(s_tokens), torch.tensor(s_groups), t_rows, t_chain
    )
    assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_uld_over_whole_vocabularies_is_the_l1_between_sorted_probabilities():
    """k covering both vocabularies: exact ULD, Σ|sorted s - sorted t| with the smaller side padded by zeros."""
    rng = np.random.default_rng(5)
    s_logits, t_logits = rng.normal(size=(3, 7)), rng.normal(size=(3, 12))
    groups = [0, 1, 2]
    t_rows, t_chain = teacher_side(softmax64(t_logits), [0, 0, 0], groups, 12)
    got = L.uld_loss(torch.tensor(s_logits, dtype=torch.float32), torch.zeros(3), torch.tensor(groups), t_rows, t_chain)
    s_sorted = np.pad(np.sort(softmax64(s_logits), -1)[:, ::-1], ((0, 0), (0, 5)))
    t_sorted = np.sort(softmax64(t_logits), -1)[:, ::-1]
    assert float(got) == pytest.approx(np.abs(s_sorted - t_sorted).sum(-1).mean(), rel=1e-5)


def test_uld_is_blind_to_which_id_holds_the_mass():
    """The same distribution under another vocabulary order is at distance 0: ids are never compared."""
    logits = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    permuted = logits[:, torch.randperm(9, generator=torch.Generator().manual_seed(1))]
    groups = torch.arange(4)
    t_rows = torch.log_softmax(logits, -1).sort(-1, descending=True).values
    assert float(L.uld_loss(permuted, torch.zeros(4), groups, t_rows, torch.zeros(4))) == pytest.approx(0.0, abs=1e-6)
    assert float(L.uld_loss(permuted * 3, torch.zeros(4), groups, t_rows, torch.zeros(4))) > 0.1


def test_uld_gradients_are_finite_with_masked_logits_and_nothing_counted():
    logits = torch.randn(5, 8, requires_grad=True)
    masked = logits.masked_fill(torch.tensor([True, False] * 4), float("-inf"))
    t_rows = torch.log_softmax(torch.randn(3, 6), -1).sort(-1, descending=True).values
    loss = L.uld_loss(masked, torch.tensor([0, 1, 2, 3, 0]), torch.tensor([0, 0, 1, 2, 2]), t_rows, torch.zeros(3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    nothing = L.uld_loss(logits, torch.zeros(5), torch.full((5,), UNALIGNED), t_rows, torch.zeros(3))
    assert float(nothing) == 0.0


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])
def test_chunked_uld_keeps_groups_whole_and_equals_the_unchunked_loss(chunk_size):
    s_logits, s_tokens, s_groups, t_logits, t_tokens, t_groups = random_case(3, v_s=10)
    t_rows, t_chain = teacher_side(softmax64(t_logits), t_tokens, t_groups, 6)
    torch.manual_seed(0)
    hidden = torch.randn(len(s_groups), 5, requires_grad=True)
    weight = torch.randn(10, 5, requires_grad=True)
    targets, groups = torch.tensor(s_tokens), torch.tensor(s_groups)
    whole = L.uld_loss(hidden @ weight.T, targets, groups, t_rows, t_chain, num_items=1.0)
    g_whole = torch.autograd.grad(whole, (hidden, weight))
    joined = torch.cat([torch.tensor([False]), (groups[1:] == groups[:-1]) & (groups[1:] >= 0)])
    chunked = L.chunked_head_loss(
        hidden, weight, L.summed_uld_chunk(targets, groups, t_rows, t_chain), chunk_size, joined=joined
    )
    g_chunked = torch.autograd.grad(chunked, (hidden, weight))
    assert float(chunked) == pytest.approx(float(whole), rel=1e-5)
    for a, b in zip(g_whole, g_chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunk_spans_never_cut_a_joined_run():
    joined = [False, True, False, True, True, True, False]
    assert L.chunk_spans(7, 3) == ((0, 3), (3, 6), (6, 7))
    assert L.chunk_spans(7, 3, torch.tensor(joined)) == ((0, 2), (2, 6), (6, 7))  # the run 2..5 is one chunk
    assert L.chunk_spans(7, 10, torch.tensor(joined)) == ((0, 7),)
