"""Each loss against a float64 reference, known values, masks, empty masks, accumulation, chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distil.train import losses as L

torch.set_num_threads(1)


def _softmax64(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = x.astype(np.float64) / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _kl64(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(-1)


def _reference(kind: str, s: np.ndarray, t: np.ndarray, temp: float, beta: float, alpha: float) -> np.ndarray:
    ps, pt = _softmax64(s, temp), _softmax64(t, temp)
    scale = temp**2
    if kind == "forward_kl":
        return _kl64(pt, ps) * scale
    if kind == "reverse_kl":
        return _kl64(ps, pt) * scale
    if kind == "jsd":
        m = beta * pt + (1 - beta) * ps
        return (beta * _kl64(pt, m) + (1 - beta) * _kl64(ps, m)) * scale
    if kind == "skew_forward_kl":
        return _kl64(pt, alpha * pt + (1 - alpha) * ps) * scale
    if kind == "skew_reverse_kl":
        return _kl64(ps, alpha * ps + (1 - alpha) * pt) * scale
    return 0.5 * np.abs(pt - ps).sum(-1)


@pytest.mark.parametrize("kind", L.DIVERGENCES)
@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_divergence_matches_float64_reference(kind, temp):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 11, generator=g) * 3
    t = torch.randn(3, 5, 11, generator=g) * 3
    mask = torch.rand(3, 5, generator=g) > 0.3
    got = L.distillation_loss(s, t, mask, kind=kind, temperature=temp, beta=0.3, alpha=0.2)
    ref = _reference(kind, s.numpy(), t.numpy(), temp, 0.3, 0.2)
    expected = ref[mask.numpy()].sum() / mask.sum().item()
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_identical_distributions_give_zero(kind):
    x = torch.randn(4, 7, 13)
    assert L.distillation_loss(x, x.clone(), kind=kind).item() == pytest.approx(0.0, abs=1e-6)


def test_known_values():
    # p_T = [0.5, 0.5], p_S = [0.9, 0.1]: forward KL = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1)
    t = torch.log(torch.tensor([[0.5, 0.5]]))
    s = torch.log(torch.tensor([[0.9, 0.1]]))
    assert L.forward_kl(s, t).item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5.0), rel=1e-6)
    assert L.reverse_kl(s, t).item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), rel=1e-6)
    assert L.total_variation(s, t).item() == pytest.approx(0.4, rel=1e-6)
    # JSD(0.5) of two disjoint one-hot distributions is ln 2
    big = torch.tensor([[50.0, -50.0]])
    assert L.generalized_jsd(big, -big, beta=0.5).item() == pytest.approx(math.log(2), rel=1e-5)
    # β at the ends means forward / reverse KL (TRL's convention)
    assert L.generalized_jsd(s, t, beta=0.0).item() == pytest.approx(L.forward_kl(s, t).item())
    assert L.generalized_jsd(s, t, beta=1.0).item() == pytest.approx(L.reverse_kl(s, t).item())
    # temperature scales by T²: equal logits scaled by T give T² × the T=1 value
    assert L.forward_kl(s * 2, t * 2, temperature=2.0).item() == pytest.approx(4 * L.forward_kl(s, t).item(), rel=1e-5)
    # hard-label CE of a uniform distribution over 4 classes is ln 4
    assert L.cross_entropy(torch.zeros(2, 4), torch.tensor([1, 3])).item() == pytest.approx(math.log(4), rel=1e-6)
    assert L.mixed_loss(torch.tensor(2.0), torch.tensor(4.0), 0.25).item() == pytest.approx(3.5)


@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_masked_and_empty_rows_have_finite_gradients(kind):
    s = torch.randn(2, 3, 9, requires_grad=True)
    t = torch.randn(2, 3, 9)
    t[1, 2] = float("nan")  # a masked-out position may hold garbage
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    loss = L.distillation_loss(s, t, mask, kind=kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert s.grad[1, 2].abs().sum() == 0
    s.grad = None
    empty = L.distillation_loss(s, torch.randn(2, 3, 9), torch.zeros(2, 3, dtype=torch.bool), kind=kind)
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(s.grad).all()


def test_accumulation_two_by_four_equals_one_by_eight():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(17, 8, generator=g, requires_grad=True)
    hidden = torch.randn(8, 6, 8, generator=g)
    teacher = torch.randn(8, 6, 17, generator=g)
    mask = torch.rand(8, 6, generator=g) > 0.4
    full = L.forward_kl(hidden @ weight.T, teacher, mask, temperature=2.0)
    full.backward()
    full_grad = weight.grad.clone()
    weight.grad = None
    n = mask.sum()
    total = 0.0
    for part in (slice(0, 4), slice(4, 8)):
        loss = L.forward_kl(hidden[part] @ weight.T, teacher[part], mask[part], temperature=2.0, num_items=n)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(full.item(), rel=1e-6)
    torch.testing.assert_close(weight.grad, full_grad, rtol=1e-5, atol=1e-7)


def test_topk_kd_matches_reference_and_is_exact_when_k_is_the_vocabulary():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 20, generator=g)
    t = torch.randn(5, 20, generator=g)
    t_logp = torch.log_softmax(t, -1)
    ids = t_logp.topk(4, -1).indices
    got = L.topk_kd_loss(s, ids, t_logp.gather(-1, ids).half())
    ps, pt = _softmax64(s.numpy()), _softmax64(t.numpy())
    ref = []
    for row in range(5):
        keep = ids[row].numpy()
        rest = np.setdiff1d(np.arange(20), keep)
        p = np.append(pt[row, keep], pt[row, rest].sum())
        q = np.append(ps[row, keep], ps[row, rest].sum())
        ref.append(_kl64(p, q))
    assert got.item() == pytest.approx(np.mean(ref), rel=2e-3)  # the teacher values went through fp16
    all_ids = torch.arange(20).expand(5, 20)
    exact = L.topk_kd_loss(s, all_ids, t_logp)
    assert exact.item() == pytest.approx(L.forward_kl(s, t).item(), rel=1e-4)


def test_sequence_kd_and_rationale_multitask():
    logits = torch.randn(2, 5, 11)
    targets = torch.tensor([[-100, 3, 4, -100, -100], [-100, -100, 1, 2, 7]])
    ce = L.sequence_kd_loss(logits, targets)
    logp = torch.log_softmax(logits.double(), -1)
    picked = [-logp[b, s, targets[b, s]] for b in range(2) for s in range(5) if targets[b, s] >= 0]
    assert ce.item() == pytest.approx(torch.stack(picked).mean().item(), rel=1e-6)
    both = L.rationale_multitask_loss(logits, targets, logits, targets, rationale_weight=0.5)
    assert both.item() == pytest.approx(1.5 * ce.item(), rel=1e-6)


def test_feature_loss_mse_and_cosine():
    torch.manual_seed(0)
    student = [torch.randn(2, 3, 4) for _ in range(3)]
    teacher = [torch.randn(2, 3, 6) for _ in range(5)]
    mapping = L.layer_map(2, 4)
    assert mapping == {1: 2, 2: 4}
    projector = L.FeatureProjector(4, 6, list(mapping))
    mse = L.feature_loss(student, teacher, mapping, projector, kind="mse")
    expected = np.mean(
        [
            ((projector(student[s], i) - teacher[t]) ** 2).mean().item()
            for i, (s, t) in enumerate(sorted(mapping.items()))
        ]
    )
    assert mse.item() == pytest.approx(expected, rel=1e-5)
    mse.backward()
    assert all(p.grad is not None for p in projector.parameters())
    # a projection that reproduces the teacher exactly gives zero
    ident = lambda x, i: torch.cat([x, x[..., :2]], -1)  # noqa: E731
    same = [torch.cat([x, x[..., :2]], -1) for x in student]
    assert L.feature_loss(student, same, {1: 1, 2: 2}, ident, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)


def test_relation_losses():
    torch.manual_seed(0)
    t = torch.randn(6, 10)
    # relations are invariant to rotation and scale: a rotated, scaled teacher gives zero
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    assert L.relation_loss(3.0 * t @ q, t).item() == pytest.approx(0.0, abs=1e-5)
    assert L.relation_loss(t @ q, t, kind="similarity").item() == pytest.approx(0.0, abs=1e-5)
    s = torch.randn(6, 4, requires_grad=True)
    loss = L.relation_loss(s, t) + L.relation_loss(s, t, kind="similarity")
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(s.grad).all()
    pooled = L.mean_pool(torch.arange(12.0).view(1, 4, 3), torch.tensor([[1, 1, 0, 0]]))
    assert pooled.tolist() == [[1.5, 2.5, 3.5]]


@pytest.mark.parametrize("kind", ["forward_kl", "jsd", "ce", "topk"])
def test_chunked_head_loss_equals_unchunked(kind):
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(23, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, requires_grad=True)
    t_hidden = torch.randn(23, 12, generator=g)
    t_weight = torch.randn(50, 12, generator=g)
    targets = torch.randint(0, 50, (23,), generator=g)
    t_logp = torch.log_softmax(t_hidden @ t_weight.T, -1)
    ids = t_logp.topk(5, -1).indices
    vals = t_logp.gather(-1, ids)
    if kind in ("forward_kl", "jsd"):
        chunk = L.summed_divergence_chunk(lambda a, b: t_hidden[a:b] @ t_weight.T, kind, temperature=1.5, beta=0.4)
    elif kind == "ce":
        chunk = L.summed_cross_entropy_chunk(targets)
    else:
        chunk = L.summed_topk_chunk(ids, vals)
    ref = chunk(hidden @ weight.T, 0, 23)
    ref.backward()
    ref_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = L.chunked_head_loss(hidden, weight, chunk, chunk_size=5)
    (got * 2).backward()  # the upstream gradient is applied
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(hidden.grad, 2 * ref_grads[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(weight.grad, 2 * ref_grads[1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert L.chunked_head_loss(hidden, weight, chunk, chunk_size=7).item() == pytest.approx(ref.item(), rel=1e-5)


def test_chunked_head_never_builds_full_logits():
    seen = []

    def chunk(logits, a, b):
        seen.append(tuple(logits.shape))
        return logits.float().logsumexp(-1).sum()

    hidden = torch.randn(40, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    L.chunked_head_loss(hidden, weight, chunk, chunk_size=16).backward()
    assert seen == [(16, 30), (16, 30), (8, 30)]


def test_chunked_head_loss_follows_the_heads_rule_with_bias_and_soft_cap():
    """A head with a bias, a scale and a soft-cap: the chunked loss and its gradients (bias included)
    equal the unchunked loss of the same head."""
    from distil.train.heads import OutputHead

    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(19, 8, generator=g, requires_grad=True)
    weight = torch.randn(30, 8, generator=g, requires_grad=True)
    bias = torch.randn(30, generator=g, requires_grad=True)
    head = OutputHead(weight, bias, multiplier=1.5, softcap=2.0)
    targets = torch.randint(0, 30, (19,), generator=g)
    chunk = L.summed_cross_entropy_chunk(targets)
    ref = chunk(torch.tanh(1.5 * (hidden @ weight.T + bias) / 2.0) * 2.0, 0, 19)
    ref.backward()
    ref_grads = hidden.grad.clone(), weight.grad.clone(), bias.grad.clone()
    hidden.grad = weight.grad = bias.grad = None
    got = L.chunked_head_loss(hidden, head, chunk, chunk_size=4)
    got.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    for mine, theirs in zip((hidden.grad, weight.grad, bias.grad), ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


# --- -inf logits: a masked vocabulary ------------------------------------------------------------------

FLOOR64 = np.log(1e-12)


def _log_softmax64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64)
    finite_max = np.where(np.isfinite(z), z, -np.inf).max(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return z - finite_max - np.log(np.exp(z - finite_max).sum(-1, keepdims=True))


def _kl64_masked(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) with 0·log 0 = 0 and q = 0 read as 1e-12 (the losses' documented convention)."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - np.where(np.isneginf(log_q), FLOOR64, log_q)), 0.0)
    return terms.sum(-1)


def _log_mix64(log_p: np.ndarray, log_q: np.ndarray, w: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(w * np.exp(log_p) + (1 - w) * np.exp(log_q))


def _reference_masked(kind: str, s: np.ndarray, t: np.ndarray, beta: float = 0.3, alpha: float = 0.2) -> np.ndarray:
    ls, lt = _log_softmax64(s), _log_softmax64(t)
    if kind == "forward_kl":
        return _kl64_masked(lt, ls)
    if kind == "reverse_kl":
        return _kl64_masked(ls, lt)
    if kind == "jsd":
        lm = _log_mix64(lt, ls, beta)
        return beta * _kl64_masked(lt, lm) + (1 - beta) * _kl64_masked(ls, lm)
    if kind == "skew_forward_kl":
        return _kl64_masked(lt, _log_mix64(lt, ls, alpha))
    if kind == "skew_reverse_kl":
        return _kl64_masked(ls, _log_mix64(ls, lt, alpha))
    return 0.5 * np.abs(np.exp(lt) - np.exp(ls)).sum(-1)


def _masked_pair(where: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    s = torch.randn(2, 3, 9, generator=g) * 2
    t = torch.randn(2, 3, 9, generator=g) * 2
    if where in ("both", "teacher"):
        t[..., [2, 5]] = float("-inf")
    if where in ("both", "student"):
        s[..., [2, 5]] = float("-inf")
    if where == "teacher":
        t[0, 1, :8] = float("-inf")  # a teacher sure of one token: a one-hot row
    return s, t


@pytest.mark.parametrize("where", ["both", "teacher", "student"])
@pytest.mark.parametrize("kind", L.DIVERGENCES)
def test_divergences_with_minus_inf_logits_are_finite_and_match_float64(kind, where):
    s, t = _masked_pair(where)
    s.requires_grad_(True)
    loss = L.distillation_loss(s, t, kind=kind, beta=0.3, alpha=0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    ref = _reference_masked(kind, s.detach().numpy(), t.numpy()).mean()
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)
    if where == "both":
        # a vocabulary masked on both sides is simply absent: the same as the loss over the rest
        keep = [i for i in range(9) if i not in (2, 5)]
        without = L.distillation_loss(s.detach()[..., keep], t[..., keep], kind=kind, beta=0.3, alpha=0.2)
        assert loss.item() == pytest.approx(without.item(), rel=1e-5, abs=1e-7)
        assert (s.grad[..., [2, 5]] == 0).all()


@pytest.mark.parametrize("where", ["both", "student"])
def test_cross_entropy_with_minus_inf_logits(where):
    s, _ = _masked_pair(where)
    s.requires_grad_(True)
    targets = torch.tensor([[0, 2, 4], [8, 5, 1]])  # 2 and 5 are masked: the student can never say them
    loss = L.cross_entropy(s, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    ls = _log_softmax64(s.detach().numpy())
    picked = np.take_along_axis(ls, targets.numpy()[..., None], -1)[..., 0]
    assert loss.item() == pytest.approx(-np.where(np.isneginf(picked), FLOOR64, picked).mean(), rel=1e-5)
    summed = L.summed_cross_entropy_chunk(targets.reshape(6))(s.detach().reshape(6, 9), 0, 6)  # the chunked head's CE
    assert summed.item() == pytest.approx(6 * loss.item(), rel=1e-5)


@pytest.mark.parametrize("where", ["student", "teacher", "all_but_topk"])
def test_topk_kd_with_minus_inf_logits(where):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(4, 12, generator=g) * 2
    t_logp = torch.log_softmax(torch.randn(4, 12, generator=g) * 2, -1)
    ids = t_logp.topk(3, -1).indices
    vals = t_logp.gather(-1, ids)
    if where == "student":
        s.scatter_(-1, ids[:, :1], float("-inf"))  # the student has masked the teacher's favourite
        s[:, 11] = float("-inf")
    elif where == "teacher":
        vals[:, 2] = float("-inf")
    else:
        rest = torch.ones_like(s, dtype=torch.bool).scatter(-1, ids, False)
        s = s.masked_fill(rest, float("-inf"))  # only the top-k survive: an empty tail
    s.requires_grad_(True)
    loss = L.topk_kd_loss(s, ids, vals)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # float64 reference on k + 1 buckets with the same conventions
    ls = _log_softmax64(s.detach().numpy())
    s_top = np.take_along_axis(ls, ids.numpy(), -1)
    rest = ls.copy()
    np.put_along_axis(rest, ids.numpy(), -np.inf, -1)
    with np.errstate(divide="ignore"):
        s_tail = np.log(np.exp(rest).sum(-1, keepdims=True))
    s_buckets = np.maximum(np.concatenate([s_top, s_tail], -1), FLOOR64)
    t_top = np.minimum(vals.numpy().astype(np.float64), 0.0)
    t_tail = np.maximum(1 - np.exp(t_top).sum(-1, keepdims=True), 1e-12)
    t_buckets = np.concatenate([t_top, np.log(t_tail)], -1)
    t_buckets = t_buckets - np.log(np.exp(t_buckets).sum(-1, keepdims=True))
    assert loss.item() == pytest.approx(_kl64_masked(t_buckets, s_buckets).mean(), rel=1e-5, abs=1e-6)
