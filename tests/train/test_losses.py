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
    expected = np.mean([
        ((projector(student[s], i) - teacher[t]) ** 2).mean().item() for i, (s, t) in enumerate(sorted(mapping.items()))
    ])
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
