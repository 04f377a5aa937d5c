"""The compact row of the teacher cache: one token's top-k (ids and log-probabilities) and its tail mass in
100 bytes at k = 50 on a 49,152-token vocabulary (fp16 + int32 take 300).

A row holds the k entries in id order, so the ids form a sorted set, which Elias–Fano coding stores in
k·(2 + log2(V/k)) bits (75 bytes here, against 100 for 16-bit ids): each id's low L = floor(log2(V/k)) bits
as they are, and its high bits as a unary bitmap in which the i-th set bit sits at (id >> L) + i. Ids are
exact. The log-probabilities are quantised: the row's largest (``hi``, to 1/256 nat) and smallest (``lo``, to
1/4 nat, rounded down; in a peaked row a higher floor when that is closer in KL, see ``LO_RANGES``) are kept,
and every entry is one of 11 evenly spaced levels between them; two levels share 7 bits (11² = 121 ≤ 128).
The mass outside the top-k is kept as its log-odds (to 1/16: relative precision for the tail when it is small
and for the top-k's mass when the tail is nearly all of it), and decoding rescales the entries so that they and
the tail sum to one, so a loss that reads the tail as 1 - Σ top-k sees the kept tail.

Every row has the same width (:class:`RowLayout`), so the cache is one uint8 array [T, row_bytes],
memory-mapped, and any rows decode with a few vectorised numpy operations. The error this costs is measured
as the KL divergence from the exact top-k distribution (k + 1 buckets) by :func:`compression_kl`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LEVELS = 11  # log-probability levels per entry; two entries' levels share 7 bits (11² = 121 ≤ 128)
PAIR_BITS = 7
HI_BITS, HI_MIN, HI_STEP = 12, -16.0, 1 / 256  # the row's largest log-probability (≥ -log V ≥ -16)
LO_BITS, LO_MIN, LO_STEP = 8, -64.0, 1 / 4  # its smallest (lower ones are clamped: e^-64 is no mass)
TAIL_BITS, TAIL_LOGIT = 9, 16.0  # log-odds of the mass outside the top-k, in [-16, 16]
TAIL_STEP = 2 * TAIL_LOGIT / (2**TAIL_BITS - 1)
HEADER_BITS = HI_BITS + LO_BITS + TAIL_BITS
BLOCK_ROWS = 4096  # rows encoded or decoded at a time: the bit matrix of a block is block × row_bits bytes


@dataclass(frozen=True)
class RowLayout:
    """Where each field of a row lies, for ``k`` entries over a vocabulary of ``vocab`` ids."""

    k: int
    vocab: int

    @property
    def low_bits(self) -> int:
        return max(0, int(math.floor(math.log2(self.vocab / self.k)))) if self.vocab > self.k else 0

    @property
    def high_bits(self) -> int:
        return self.k + ((self.vocab - 1) >> self.low_bits) + 1

    @property
    def value_bits(self) -> int:
        return -(-self.k // 2) * PAIR_BITS

    @property
    def row_bits(self) -> int:
        return self.high_bits + self.k * self.low_bits + self.value_bits + HEADER_BITS

    @property
    def row_bytes(self) -> int:
        return -(-self.row_bits // 8)


def _to_bits(values: np.ndarray, width: int) -> np.ndarray:
    """[R, n] non-negative ints -> [R, n * width] bits, most significant first."""
    if width == 0:
        return np.zeros((len(values), 0), dtype=np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values.astype(np.int64)[..., None] >> shifts) & 1).reshape(len(values), -1).astype(np.uint8)


def _from_bits(bits: np.ndarray, width: int) -> np.ndarray:
    """[R, n * width] bits -> [R, n] ints."""
    if width == 0:
        return np.zeros((len(bits), 0), dtype=np.int64)
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return bits.reshape(len(bits), -1, width).astype(np.int64) @ weights


def _tail(logprobs: np.ndarray) -> np.ndarray:
    """[R] the mass outside the top-k, from float32 (or wider) log-probabilities."""
    return np.clip(1.0 - np.exp(logprobs.astype(np.float64)).sum(-1), 0.0, 1.0)


def _hi_code(logprobs: np.ndarray) -> np.ndarray:
    return np.clip(np.round((logprobs.max(-1) - HI_MIN) / HI_STEP), 0, 2**HI_BITS - 1).astype(np.int64)


def _lo_code(lo: np.ndarray) -> np.ndarray:
    return np.clip(np.floor((np.maximum(lo, LO_MIN) - LO_MIN) / LO_STEP), 0, 2**LO_BITS - 1).astype(np.int64)


def _tail_code(logprobs: np.ndarray) -> np.ndarray:
    tail = np.clip(_tail(logprobs), 1e-300, 1.0 - 1e-16)
    log_odds = np.log(tail) - np.log1p(-tail)
    return np.clip(np.round((log_odds + TAIL_LOGIT) / TAIL_STEP), 0, 2**TAIL_BITS - 1).astype(np.int64)


def _header_values(
    hi_code: np.ndarray, lo_code: np.ndarray, tail_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hi, lo, log of the top-k's mass) as decoding reads them, [R] each."""
    hi = HI_MIN + hi_code * HI_STEP
    log_mass = -np.logaddexp(0.0, tail_code * TAIL_STEP - TAIL_LOGIT)  # log(1 - tail) = log sigmoid(-log-odds)
    return hi, np.minimum(LO_MIN + lo_code * LO_STEP, hi), log_mass


def _levels(logprobs: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """[R, k] level of each entry between the row's lo and hi (all at the top when they meet)."""
    span = (hi - lo)[:, None]
    scaled = (logprobs - lo[:, None]) / np.where(span > 0, span, 1.0) * (LEVELS - 1)
    return np.where(span > 0, np.clip(np.round(scaled), 0, LEVELS - 1), LEVELS - 1).astype(np.int64)


def _values(levels: np.ndarray, hi: np.ndarray, lo: np.ndarray, log_mass: np.ndarray) -> np.ndarray:
    """The log-probabilities levels stand for, rescaled so they sum to the kept mass of the top-k."""
    values = lo[:, None] + levels / (LEVELS - 1) * (hi - lo)[:, None]
    return values + (log_mass - _logsumexp(values))[:, None]


# Lowest levels tried per row, as nats below the top (besides the row's own lowest entry): in a peaked row the
# lowest entries are so far below the top that even levels waste most of their resolution on mass that is
# nearly nothing; clamping them up to a higher floor costs less KL than the coarse steps do.
LO_RANGES = (16.0, 12.0, 9.0, 7.0, 5.0, 4.0, 3.0, 2.0)


def encode_rows(ids: np.ndarray, logprobs: np.ndarray, layout: RowLayout) -> np.ndarray:
    """[R, k] distinct ids in [0, vocab) and their log-probabilities (float32 or wider, any order) -> [R, row_bytes]
    uint8 rows."""
    ids, logprobs = np.asarray(ids), np.asarray(logprobs)
    if ids.shape != logprobs.shape or ids.ndim != 2 or ids.shape[1] != layout.k:
        raise ValueError(f"expected ids and log-probabilities of shape [R, {layout.k}], got {ids.shape}")
    out = np.empty((len(ids), layout.row_bytes), dtype=np.uint8)
    for a in range(0, len(ids), BLOCK_ROWS):
        out[a : a + BLOCK_ROWS] = _encode_block(ids[a : a + BLOCK_ROWS], logprobs[a : a + BLOCK_ROWS], layout)
    return out


def _encode_block(ids: np.ndarray, logprobs: np.ndarray, layout: RowLayout) -> np.ndarray:
    order = np.argsort(ids, axis=1, kind="stable")
    ids = np.take_along_axis(ids.astype(np.int64), order, 1)
    logprobs = np.take_along_axis(logprobs.astype(np.float64), order, 1)
    rows, k, low = len(ids), layout.k, layout.low_bits
    high = np.zeros((rows, layout.high_bits), dtype=np.uint8)
    np.put_along_axis(high, (ids >> low) + np.arange(k), 1, axis=1)
    hi_code, tail_code, lo_code = _hi_code(logprobs), _tail_code(logprobs), _best_lo_code(logprobs, ids)
    hi, lo, _ = _header_values(hi_code, lo_code, tail_code)
    levels = _levels(logprobs, hi, lo)
    if k % 2:
        levels = np.concatenate([levels, np.zeros((rows, 1), dtype=np.int64)], axis=1)
    pairs = levels[:, 0::2] * LEVELS + levels[:, 1::2]
    bits = np.concatenate(
        [
            high,
            _to_bits(ids & ((1 << low) - 1), low),
            _to_bits(pairs, PAIR_BITS),
            _to_bits(hi_code[:, None], HI_BITS),
            _to_bits(lo_code[:, None], LO_BITS),
            _to_bits(tail_code[:, None], TAIL_BITS),
        ],
        axis=1,
    )
    return np.packbits(bits, axis=1)


def _best_lo_code(logprobs: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per row, the lowest level (of the row's own lowest entry and ``LO_RANGES`` below its top) whose quantised
    row is closest to the exact one in KL."""
    hi_code, tail_code = _hi_code(logprobs), _tail_code(logprobs)
    lowest, top = logprobs.min(-1), logprobs.max(-1)
    candidates = [_lo_code(lowest)] + [_lo_code(np.maximum(lowest, top - r)) for r in LO_RANGES]
    kls = []
    for lo_code in candidates:
        hi, lo, log_mass = _header_values(hi_code, lo_code, tail_code)
        kls.append(compression_kl(ids, logprobs, ids, _values(_levels(logprobs, hi, lo), hi, lo, log_mass)))
    best = np.argmin(np.stack(kls), axis=0)
    return np.stack(candidates)[best, np.arange(len(logprobs))]


def decode_rows(rows: np.ndarray, layout: RowLayout) -> tuple[np.ndarray, np.ndarray]:
    """[R, row_bytes] rows -> (ids [R, k] int32, log-probabilities [R, k] float32), most likely first, rescaled so
    that the entries and the kept tail sum to one."""
    rows = np.asarray(rows)
    ids = np.empty((len(rows), layout.k), dtype=np.int32)
    logprobs = np.empty((len(rows), layout.k), dtype=np.float32)
    for a in range(0, len(rows), BLOCK_ROWS):
        ids[a : a + BLOCK_ROWS], logprobs[a : a + BLOCK_ROWS] = _decode_block(rows[a : a + BLOCK_ROWS], layout)
    return ids, logprobs


def _decode_block(rows: np.ndarray, layout: RowLayout) -> tuple[np.ndarray, np.ndarray]:
    n, k, low = len(rows), layout.k, layout.low_bits
    bits = np.unpackbits(rows, axis=1)[:, : layout.row_bits]
    at = layout.high_bits
    _, set_at = np.nonzero(bits[:, :at])  # row-major: the k set bits of each row, in order
    high = set_at.reshape(n, k) - np.arange(k)
    ids = (high << low) | _from_bits(bits[:, at : at + k * low], low) if low else high
    at += k * low
    pairs = _from_bits(bits[:, at : at + layout.value_bits], PAIR_BITS)
    levels = np.stack([pairs // LEVELS, pairs % LEVELS], axis=-1).reshape(n, -1)[:, :k]
    at += layout.value_bits
    hi_code = _from_bits(bits[:, at : at + HI_BITS], HI_BITS)[:, 0]
    lo_code = _from_bits(bits[:, at + HI_BITS : at + HI_BITS + LO_BITS], LO_BITS)[:, 0]
    tail_code = _from_bits(bits[:, at + HI_BITS + LO_BITS : at + HEADER_BITS], TAIL_BITS)[:, 0]
    values = _values(levels, *_header_values(hi_code, lo_code, tail_code))
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(ids, order, 1).astype(np.int32), np.take_along_axis(values, order, 1).astype(np.float32)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1)
    return top + np.log(np.exp(x - top[:, None]).sum(-1))


def compression_kl(
    ids: np.ndarray, logprobs: np.ndarray, decoded_ids: np.ndarray, decoded_logprobs: np.ndarray
) -> np.ndarray:
    """[R] KL(exact || decoded) over k + 1 buckets (the k ids, then the rest of the mass), per row, in float64.
    The two rows must hold the same ids (any order): Elias–Fano keeps them exactly."""
    exact = _buckets(ids, logprobs)
    approx = _buckets(decoded_ids, decoded_logprobs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(exact > 0, exact * (np.log(exact) - np.log(np.maximum(approx, 1e-300))), 0.0)
    return terms.sum(-1)


def _buckets(ids: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    order = np.argsort(ids, axis=1, kind="stable")
    probs = np.exp(np.take_along_axis(np.asarray(logprobs, dtype=np.float64), order, 1))
    return np.concatenate([probs, np.clip(1.0 - probs.sum(-1, keepdims=True), 0.0, 1.0)], axis=1)
