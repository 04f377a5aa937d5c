"""Distillation losses: pure functions of tensors.

Conventions shared by every loss below:

- Logits arrive in any dtype; softmaxes run in float32.
- ``mask`` (bool or 0/1, same leading shape as the logits without the last dim) says which
  positions count; ``None`` means all of them.
- Each loss returns ``sum over counted positions / num_items``. ``num_items`` is the number of
  counted positions in the *whole* optimiser step (every micro-batch of the accumulation group, every
  process); pass it and two micro-batches of 4 sum to exactly one batch of 8. Left ``None`` it is the
  mask's own count, clamped to at least 1 so an empty mask gives 0 (with zero, finite gradients)
  instead of NaN.
- Teacher distributions arrive as logits or log-probabilities (the same thing up to a constant);
  probabilities from a record go through :func:`probs_to_logprobs` first.
- ``-inf`` logits (a masked vocabulary, a constrained teacher) give finite losses and finite
  gradients: a zero probability on the weighted side contributes nothing (0·log 0 = 0); a zero
  probability on the compared side, where the other side has mass, counts as ``FLOOR`` (1e-12, the
  floor a record's zero probability gets), so the loss stays finite and still pushes mass away.
  Finite logits are never clamped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.train.heads import OutputHead

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tv")
FLOOR = 1e-12  # the probability a -inf logit stands for where the other distribution has mass
LOG_FLOOR = math.log(FLOOR)


# --- reduction -------------------------------------------------------------------------------------


def _reduce(per_position: Tensor, mask: Tensor | None, num_items: float | Tensor | None) -> Tensor:
    """sum(per_position[mask]) / num_items; per_position and mask: [...] of the same shape."""
    if mask is None:
        mask = torch.ones_like(per_position, dtype=torch.bool)
    mask = mask.to(torch.bool)
    # torch.where, not a product: a masked position holding inf/NaN must not leak into the sum.
    total = torch.where(mask, per_position, torch.zeros_like(per_position)).sum()
    if num_items is None:
        num_items = mask.sum().clamp_min(1)
    return total / num_items


def probs_to_logprobs(probs: Tensor, floor: float = 1e-12) -> Tensor:
    """log(max(p, floor)) in float32, so a zero probability in a record stays finite. [..., C] -> [..., C]."""
    return probs.float().clamp_min(floor).log()


# --- per-position divergences ------------------------------------------------------------------------


def _log_softmax(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _floored(log_q: Tensor) -> Tensor:
    """``log_q`` with -inf entries (zero probability) at ``LOG_FLOOR``; finite entries untouched."""
    return torch.where(torch.isneginf(log_q), torch.full_like(log_q, LOG_FLOOR), log_q)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dim, with 0·log 0 = 0 and q = 0 read as ``FLOOR``. [..., V] -> [...].

    Every ``where`` replaces the values of the uncounted entries *before* they meet arithmetic: a
    ``where`` after ``-inf - -inf`` hides the NaN from the value but not from the gradient.
    """
    p = log_p.exp()
    counted = p > 0  # False for NaN too
    zero = torch.zeros_like(p)
    p = torch.where(counted, p, zero)
    diff = torch.where(counted, log_p, zero) - torch.where(counted, _floored(log_q), zero)
    return (p * diff).sum(-1)


def _log_mix(log_p: Tensor, log_q: Tensor, weight_p: float) -> Tensor:
    """log(w·p + (1-w)·q) computed stably in log space; -inf where both are zero. [..., V]."""
    if weight_p <= 0.0:
        return log_q
    if weight_p >= 1.0:
        return log_p
    # logaddexp(-inf, -inf) has a NaN gradient: give those entries finite stand-ins, then -inf back
    empty = torch.isneginf(log_p) & torch.isneginf(log_q)
    zero = torch.zeros_like(log_p)
    mixed = torch.logaddexp(
        torch.where(empty, zero, log_p) + math.log(weight_p), torch.where(empty, zero, log_q) + math.log1p(-weight_p)
    )
    return torch.where(empty, torch.full_like(mixed, float("-inf")), mixed)


def divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> Tensor:
    """Per-position divergence between teacher and student distributions. [..., V] x [..., V] -> [...].

    kind:
      forward_kl       KL(T || S) · T²  (Hinton et al.; mode-covering)
      reverse_kl       KL(S || T) · T²  (mode-seeking, MiniLLM)
      jsd              generalized JSD(β) = β·KL(T || M) + (1-β)·KL(S || M), M = β·T + (1-β)·S, · T²;
                       β = 0 and β = 1 are taken as forward and reverse KL, as TRL's GKD does
      skew_forward_kl  KL(T || α·T + (1-α)·S) · T²  (DistiLLM)
      skew_reverse_kl  KL(S || α·S + (1-α)·T) · T²
      tv               total variation ½·Σ|T - S| (bounded, no temperature scaling)
    """
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")
    log_s = _log_softmax(student_logits, temperature)
    log_t = _log_softmax(teacher_logits, temperature).detach()
    scale = temperature**2
    if kind == "forward_kl" or (kind == "jsd" and beta <= 0.0):
        return _kl(log_t, log_s) * scale
    if kind == "reverse_kl" or (kind == "jsd" and beta >= 1.0):
        return _kl(log_s, log_t) * scale
    if kind == "jsd":
        log_m = _log_mix(log_t, log_s, beta)
        return (beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)) * scale
    if kind == "skew_forward_kl":
        return _kl(log_t, _log_mix(log_t, log_s, alpha)) * scale
    if kind == "skew_reverse_kl":
        return _kl(log_s, _log_mix(log_s, log_t, alpha)) * scale
    return 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
    num_items: float | Tensor | None = None,
) -> Tensor:
    """Masked, token-normalised divergence. student/teacher: [..., V], mask: [...]. Returns a scalar."""
    if mask is not None:
        # padding may hold anything (even NaN, or a row of -inf); zero both there so no NaN reaches a gradient
        keep = mask.to(torch.bool).unsqueeze(-1)
        teacher_logits = torch.where(keep, teacher_logits, torch.zeros_like(teacher_logits))
        student_logits = torch.where(keep, student_logits, torch.zeros_like(student_logits))
    per_position = divergence(student_logits, teacher_logits, kind, temperature, beta, alpha)
    return _reduce(per_position, mask, num_items)


def forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0, num_items=None
) -> Tensor:
    """KL(T || S)·T², [..., V] -> scalar."""
    return distillation_loss(
        student_logits, teacher_logits, mask, kind="forward_kl", temperature=temperature, num_items=num_items
    )


def reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0, num_items=None
) -> Tensor:
    """KL(S || T)·T², [..., V] -> scalar."""
    return distillation_loss(
        student_logits, teacher_logits, mask, kind="reverse_kl", temperature=temperature, num_items=num_items
    )


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    num_items=None,
) -> Tensor:
    """Generalized Jensen-Shannon divergence JSD(β) (GKD), [..., V] -> scalar."""
    return distillation_loss(
        student_logits, teacher_logits, mask, kind="jsd", beta=beta, temperature=temperature, num_items=num_items
    )


def skew_forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    alpha: float = 0.1,
    temperature: float = 1.0,
    num_items=None,
) -> Tensor:
    """KL(T || αT + (1-α)S)·T², [..., V] -> scalar."""
    return distillation_loss(
        student_logits,
        teacher_logits,
        mask,
        kind="skew_forward_kl",
        alpha=alpha,
        temperature=temperature,
        num_items=num_items,
    )


def skew_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    alpha: float = 0.1,
    temperature: float = 1.0,
    num_items=None,
) -> Tensor:
    """KL(S || αS + (1-α)T)·T², [..., V] -> scalar."""
    return distillation_loss(
        student_logits,
        teacher_logits,
        mask,
        kind="skew_reverse_kl",
        alpha=alpha,
        temperature=temperature,
        num_items=num_items,
    )


def total_variation(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, temperature: float = 1.0, num_items=None
) -> Tensor:
    """½·Σ|T - S|, [..., V] -> scalar."""
    return distillation_loss(
        student_logits, teacher_logits, mask, kind="tv", temperature=temperature, num_items=num_items
    )


# --- hard labels and mixes ---------------------------------------------------------------------------


def cross_entropy(
    logits: Tensor,
    targets: Tensor,
    mask: Tensor | None = None,
    num_items: float | Tensor | None = None,
    ignore_index: int = -100,
) -> Tensor:
    """Hard-label cross-entropy. logits: [..., C], targets: [...] int (ignore_index skipped). Scalar."""
    valid = targets != ignore_index
    mask = valid if mask is None else (mask.to(torch.bool) & valid)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    picked = _floored(log_probs.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1))  # a -inf target: FLOOR
    return _reduce(-picked, mask, num_items)


def sequence_kd_loss(logits: Tensor, teacher_token_ids: Tensor, mask: Tensor | None = None, num_items=None) -> Tensor:
    """Sequence-level KD (Kim & Rush 2016): cross-entropy on the teacher's text.

    logits: [B, S, V] already aligned so logits[:, t] predicts teacher_token_ids[:, t] (i.e. shifted);
    teacher_token_ids: [B, S] with -100 on prompt and padding. Scalar.
    """
    return cross_entropy(logits, teacher_token_ids, mask, num_items)


def mixed_loss(ce: Tensor, kd: Tensor, alpha: float) -> Tensor:
    """α·CE + (1-α)·KD (Hinton et al.). Scalars in, scalar out."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * ce + (1.0 - alpha) * kd


def rationale_multitask_loss(
    label_logits: Tensor,
    label_targets: Tensor,
    rationale_logits: Tensor,
    rationale_targets: Tensor,
    rationale_weight: float = 1.0,
    num_label_items=None,
    num_rationale_items=None,
) -> Tensor:
    """Distilling step-by-step (Hsieh et al. 2023): L_label + λ·L_rationale.

    label_logits: [B, S, V] with label_targets [B, S] (-100 outside the label tokens);
    rationale_logits: [B, S', V] with rationale_targets [B, S'] (-100 outside the rationale). Scalar.
    """
    label = cross_entropy(label_logits, label_targets, num_items=num_label_items)
    rationale = cross_entropy(rationale_logits, rationale_targets, num_items=num_rationale_items)
    return label + rationale_weight * rationale


# --- sparse top-k KD (API teachers, the offline cache) ------------------------------------------------


def topk_kd_loss(
    student_logits: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    mask: Tensor | None = None,
    num_items: float | Tensor | None = None,
) -> Tensor:
    """Forward KL against a sparse teacher: its top-k tokens plus one bucket for the rest of the mass.

    student_logits: [N, V]; topk_ids: [N, k] int; topk_logprobs: [N, k] (teacher log-probs, any
    float dtype); mask: [N]. Both distributions are folded onto k + 1 buckets (the k ids, then "every
    other token"), so the loss is exact for what the teacher revealed and honest about what it did not.
    """
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    ids = topk_ids.long()
    s_top = _floored(log_s.gather(-1, ids))  # [N, k]; a masked (-inf) top-k id counts as FLOOR
    # the student's tail: logsumexp over the ids not in the top-k, from a copy with the top-k set to -inf;
    # a tail of only -inf (k = V, or the rest masked) has a NaN gradient, so it gets a stand-in, then FLOOR
    rest = log_s.scatter(-1, ids, float("-inf"))
    empty = torch.isneginf(rest).all(-1, keepdim=True)  # [N, 1]
    s_tail = torch.where(empty, torch.zeros_like(rest), rest).logsumexp(-1, keepdim=True)
    s_tail = torch.where(
        empty, torch.full_like(s_tail, LOG_FLOOR), s_tail.clamp_min(LOG_FLOOR)
    )  # keep it finite, like the teacher's
    t_top = topk_logprobs.float().clamp_max(0.0)
    t_tail_mass = (1.0 - t_top.exp().sum(-1, keepdim=True)).clamp_min(FLOOR)
    log_t = torch.cat([t_top, t_tail_mass.log()], dim=-1)
    log_t = log_t - log_t.logsumexp(-1, keepdim=True)  # renormalise rounding of fp16 values
    log_s_buckets = torch.cat([s_top, s_tail], dim=-1)
    return _reduce(_kl(log_t, log_s_buckets), mask, num_items)


# --- cross-tokenizer: Universal Logit Distillation ---------------------------------------------------------


def uld_loss(
    student_logits: Tensor,
    student_targets: Tensor,
    student_groups: Tensor,
    teacher_logprobs: Tensor,
    teacher_chain: Tensor,
    num_items: float | Tensor | None = None,
) -> Tensor:
    """Universal Logit Distillation (Boizard et al. 2024) over text-aligned groups, for tokenizers that differ.

    Two vocabularies share no ids, so the distributions are compared as sorted probability vectors: the
    Wasserstein-1 distance between them under a uniform transport cost is Σ_i |s_(i) - t_(i)|, the L1 distance
    between the i-th largest probabilities. A group is the run of tokens on each side that covers the same text
    (:mod:`distil.train.alignment`); its distribution is the one at its first token times the probability of
    the rest of the group's actual tokens (the chain rule for the text written; GOLD's merge), so a word split
    in three by one tokenizer and kept whole by the other is compared as one event.

    student_logits: [N, V_s] at the student's answer positions; student_targets: [N] its tokens of the text;
    student_groups: [N] int, each position's group (a row of the teacher's tensors), a group's positions
    contiguous, -1 for a position no group covers; teacher_logprobs: [G, k] the teacher's top-k
    log-probabilities at each group's first token, sorted, most likely first (k may exceed V_s: the student's
    side is padded with zeros); teacher_chain: [G] log-probability of the teacher's other tokens in the group
    (0 for a one-token group). Only the top k ranks are compared one by one; the rest of each side's mass is one
    bucket, so the loss is exact when k covers both vocabularies and a lower bound on the rest otherwise
    (|Σ a_i - Σ b_i| ≤ Σ |a_i - b_i|). No temperature: the teacher's log-probabilities are taken as given.
    Returns Σ over groups / ``num_items`` (default: the number of groups).
    """
    log_s = F.log_softmax(student_logits.float(), dim=-1)
    groups = student_groups.long()
    counted = groups >= 0
    previous = torch.cat([groups.new_full((1,), -2), groups[:-1]])
    first = counted & (groups != previous)  # [N] a group's first position
    picked = _floored(log_s.gather(-1, student_targets.long().clamp_min(0).unsqueeze(-1)).squeeze(-1))  # [N]
    local = first.long().cumsum(0) - 1  # [N] each position's row among this call's groups
    rest = counted & ~first
    n_groups = int(first.sum())
    chain_s = picked.new_zeros(n_groups).index_add(0, local[rest], picked[rest])  # [G']
    k = teacher_logprobs.shape[-1]
    s_top = log_s[first].topk(min(k, log_s.shape[-1]), dim=-1).values  # [G', min(k, V_s)], sorted
    if s_top.shape[-1] < k:  # a smaller student vocabulary: its missing ranks hold no mass
        s_top = F.pad(s_top, (0, k - s_top.shape[-1]), value=float("-inf"))
    rows = groups[first]
    t_top = teacher_logprobs[rows].float().clamp_max(0.0)  # [G', k]
    chain_t = teacher_chain[rows].float()
    s_probs = (s_top + chain_s.unsqueeze(-1)).exp()
    t_probs = (t_top + chain_t.unsqueeze(-1)).exp()
    # the mass past rank k, of the merged (unnormalised: it sums to the chain's probability) distributions
    s_tail = chain_s.exp() * (1.0 - s_top.exp().sum(-1)).clamp_min(0.0)
    t_tail = chain_t.exp() * (1.0 - t_top.exp().sum(-1)).clamp_min(0.0)
    per_group = (s_probs - t_probs).abs().sum(-1) + (s_tail - t_tail).abs()
    if num_items is None:
        num_items = max(n_groups, 1)
    return per_group.sum() / num_items


# --- feature-based ------------------------------------------------------------------------------------


def layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student hidden-state index -> teacher hidden-state index, evenly spread, last onto last.

    Indices count hidden states as transformers returns them (0 = embeddings, i = after layer i).
    """
    return {s: round(s * teacher_layers / student_layers) for s in range(1, student_layers + 1)}


class FeatureProjector(nn.Module):
    """A learned linear map from student hidden size to teacher hidden size, one per mapped layer."""

    def __init__(self, student_dim: int, teacher_dim: int, layers: Sequence[int]):
        super().__init__()
        self.layers = list(layers)
        self.maps = nn.ModuleList(nn.Linear(student_dim, teacher_dim, bias=False) for _ in self.layers)

    def forward(self, student_state: Tensor, position: int) -> Tensor:
        return self.maps[position](student_state)


def feature_loss(
    student_states: Sequence[Tensor],
    teacher_states: Sequence[Tensor],
    mapping: dict[int, int],
    projector: FeatureProjector | Callable[[Tensor, int], Tensor],
    mask: Tensor | None = None,
    kind: str = "mse",
    num_items: float | Tensor | None = None,
) -> Tensor:
    """Hidden-state matching through a learned projection, averaged over the mapped layers.

    student_states: hidden states [B, S, Ds] per layer (transformers' ``hidden_states``);
    teacher_states: [B, S, Dt] per layer; mapping: student index -> teacher index; mask: [B, S].
    kind "mse": mean squared error per position (averaged over Dt); "cosine": 1 - cosine similarity.
    """
    if kind not in ("mse", "cosine"):
        raise ValueError(f"feature loss kind must be mse or cosine, got {kind!r}")
    losses = []
    for position, (s_index, t_index) in enumerate(sorted(mapping.items())):
        projected = projector(student_states[s_index].float(), position)
        target = teacher_states[t_index].float().detach()
        if kind == "mse":
            per_position = (projected - target).pow(2).mean(-1)
        else:
            per_position = 1.0 - F.cosine_similarity(projected, target, dim=-1, eps=1e-8)
        losses.append(_reduce(per_position, mask, num_items))
    return torch.stack(losses).mean()


# --- relation-based -----------------------------------------------------------------------------------


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of the unmasked positions. hidden: [B, S, D], mask: [B, S] -> [B, D]."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def _normalised_distances(x: Tensor) -> Tensor:
    d = torch.cdist(x, x)  # [B, B]
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    mean = d[off_diagonal].mean().clamp_min(1e-8) if len(x) > 1 else d.new_tensor(1.0)
    return d / mean


def _angles(x: Tensor) -> Tensor:
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # [B, B, D]: e_ij = x_i - x_j
    unit = F.normalize(diff, p=2, dim=-1)
    return torch.bmm(unit, unit.transpose(1, 2)).flatten()  # cos of angle at each vertex j


def relation_loss(
    student_pooled: Tensor, teacher_pooled: Tensor, kind: str = "distance_angle", angle_weight: float = 2.0
) -> Tensor:
    """Relation-based KD on pooled embeddings. student: [B, Ds], teacher: [B, Dt] (dims may differ).

    kind "distance_angle": RKD (Park et al. 2019), Huber loss on mean-normalised pairwise distances
    plus ``angle_weight`` × Huber loss on triplet angles. kind "similarity": similarity-preserving KD
    (Tung & Mori 2019), MSE between the row-normalised Gram matrices, divided by B².
    """
    s = student_pooled.float()
    t = teacher_pooled.float().detach()
    if kind == "distance_angle":
        distance = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))
        angle = F.smooth_l1_loss(_angles(s), _angles(t))
        return distance + angle_weight * angle
    if kind == "similarity":
        gs = F.normalize(s @ s.T, p=2, dim=1)
        gt = F.normalize(t @ t.T, p=2, dim=1)
        return (gs - gt).pow(2).sum() / (len(s) ** 2)
    raise ValueError(f"relation loss kind must be distance_angle or similarity, got {kind!r}")


# --- the chunked LM head + loss -------------------------------------------------------------------------

ChunkLoss = Callable[[Tensor, int, int], Tensor]


class _ChunkedHeadLoss(torch.autograd.Function):
    """Project hidden states to the vocabulary and take a loss, one chunk of positions at a time.

    Each chunk's forward and backward run back to back inside ``forward`` (its [chunk, V] logits are
    freed before the next chunk), and the gradients for the hidden states and the head's weight and
    bias are kept; ``backward`` only scales them. So [N, V] never exists, in either pass.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        head: OutputHead,
        chunk_loss: ChunkLoss,
        spans: tuple[tuple[int, int], ...],
    ) -> Tensor:  # noqa: ANN001
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        w = weight.detach().requires_grad_(True)
        b = None if bias is None else bias.detach().requires_grad_(True)
        params = (w,) if b is None else (w, b)
        for start, end in spans:
            h = hidden[start:end].detach().requires_grad_(True)
            with torch.enable_grad():
                loss = chunk_loss(head.project(h, w, b), start, end)
                gh, gw, *gb = torch.autograd.grad(loss, (h, *params), allow_unused=True)
            if gh is not None:
                grad_hidden[start:end] = gh
            if gw is not None:
                grad_weight += gw.float()
            if gb and gb[0] is not None:
                grad_bias += gb[0].float()
            total += loss.detach().float()
        ctx.has_bias = bias is not None
        saved = (grad_hidden, grad_weight.to(weight.dtype)) + ((grad_bias.to(bias.dtype),) if bias is not None else ())
        ctx.save_for_backward(*saved)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001
        grad_hidden, grad_weight, *grad_bias = ctx.saved_tensors
        scaled_bias = grad_bias[0] * grad_output.to(grad_bias[0].dtype) if ctx.has_bias else None
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            grad_weight * grad_output.to(grad_weight.dtype),
            scaled_bias,
            None,
            None,
            None,
        )


def chunk_spans(n: int, chunk_size: int, joined: Tensor | None = None) -> tuple[tuple[int, int], ...]:
    """Cut positions 0..n-1 into chunks of at most ``chunk_size``; ``joined`` [n] bool marks a position that must
    share its chunk with the one before (a cross-tokenizer group), so a chunk ends before such a run rather than
    inside it, and a run longer than ``chunk_size`` is one chunk of its own."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be ≥ 1")
    if joined is None:
        return tuple((a, min(a + chunk_size, n)) for a in range(0, n, chunk_size))
    flags = joined.tolist() if isinstance(joined, Tensor) else list(joined)
    cuttable = [i == 0 or not flags[i] for i in range(n)] + [True]  # may a chunk start at position i?
    spans, start = [], 0
    while start < n:
        end = min(start + chunk_size, n)
        while end > start and not cuttable[end]:
            end -= 1
        if end == start:  # one run longer than a chunk: take it whole
            end = start + 1
            while not cuttable[end]:
                end += 1
        spans.append((start, end))
        start = end
    return tuple(spans)


def chunked_head_loss(
    hidden: Tensor,
    head: OutputHead | Tensor,
    chunk_loss: ChunkLoss,
    chunk_size: int = 1024,
    joined: Tensor | None = None,
) -> Tensor:
    """Σ over chunks of ``chunk_loss(head(hidden[a:b]), a, b)`` without building [N, V].

    hidden: [N, H] (the positions that count, already gathered); head: the model's
    :class:`~distil.train.heads.OutputHead` (weight [V, H], bias, its family's scale or soft-cap), or a
    bare weight [V, H]; chunk_loss(logits [b-a, V], a, b) returns the chunk's *summed* loss (normalise
    outside, e.g. by the step's token count); joined [N] bool: positions kept in the chunk of the one before
    (see :func:`chunk_spans`). Gradients reach ``hidden`` and the head's weight and bias; under no_grad it
    only sums.
    """
    spans = chunk_spans(hidden.shape[0], chunk_size, joined)
    if isinstance(head, Tensor):
        head = OutputHead(head)
    params = [p for p in (head.weight, head.bias) if p is not None]
    if not (torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in params))):
        total = hidden.new_zeros((), dtype=torch.float32)
        for start, end in spans:
            total += chunk_loss(head(hidden[start:end]), start, end).float()
        return total
    return _ChunkedHeadLoss.apply(hidden, head.weight, head.bias, head, chunk_loss, spans)


def summed_divergence_chunk(
    teacher_logits_for: Callable[[int, int], Tensor],
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    alpha: float = 0.1,
) -> ChunkLoss:
    """A chunk loss for :func:`chunked_head_loss`: summed divergence against the teacher's logits for
    the same positions, which ``teacher_logits_for(a, b)`` returns ([b-a, V], e.g. its own chunked head)."""

    def loss(student_logits: Tensor, start: int, end: int) -> Tensor:
        return divergence(student_logits, teacher_logits_for(start, end), kind, temperature, beta, alpha).sum()

    return loss


def summed_cross_entropy_chunk(targets: Tensor) -> ChunkLoss:
    """A chunk loss: summed cross-entropy against ``targets`` [N] (sequence-level KD on teacher text)."""

    def loss(student_logits: Tensor, start: int, end: int) -> Tensor:
        return cross_entropy(student_logits, targets[start:end].long(), num_items=1.0)  # summed; -inf safe

    return loss


def summed_uld_chunk(targets: Tensor, groups: Tensor, teacher_logprobs: Tensor, teacher_chain: Tensor) -> ChunkLoss:
    """A chunk loss: summed ULD against the teacher's text-aligned groups (``targets``, ``groups`` [N] over all
    positions; the teacher's [G, k] and [G]); use with ``joined`` so no group is cut between two chunks."""

    def loss(student_logits: Tensor, start: int, end: int) -> Tensor:
        return uld_loss(
            student_logits, targets[start:end], groups[start:end], teacher_logprobs, teacher_chain, num_items=1.0
        )

    return loss


def summed_topk_chunk(topk_ids: Tensor, topk_logprobs: Tensor) -> ChunkLoss:
    """A chunk loss: summed sparse top-k KD against cached teacher top-k ([N, k] ids and logprobs)."""

    def loss(student_logits: Tensor, start: int, end: int) -> Tensor:
        return topk_kd_loss(student_logits, topk_ids[start:end], topk_logprobs[start:end], num_items=1.0)

    return loss
