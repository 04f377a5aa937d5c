"""Is the served student still as good as the gate said, on the traffic it actually gets?

Two questions over a time window of the traffic log:

* **fidelity**: the teacher is asked about a sample of the logged inputs; the answers served
  (student or escalated teacher) are compared with the teacher's, per window and per slice;
* **input drift**: do the logged inputs still look like the data the student was trained on?
  Both sets are embedded with all-MiniLM-L6-v2 and compared with the squared maximum mean
  discrepancy (MMD², Gaussian kernel, median-distance bandwidth); its p-value comes from a seeded
  permutation test, so the same inputs give the same verdict.

An alert is raised (ledger row, exit 1 in the CLI) when fidelity falls below the floor
(``maintenance.drift_floor``, else ``gate.fidelity_min``) or drift is significant at
``maintenance.drift_alpha``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --- input drift: MMD² with a permutation test ----------------------------------------------------


def _sq_distances(x: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances of rows of x [n, D] -> [n, n]."""
    norms = np.sum(x * x, axis=1)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * x @ x.T, 0.0)


def _mmd2_from_kernel(k: np.ndarray, is_x: np.ndarray) -> float:
    """Unbiased MMD² from a pooled kernel matrix k [n+m, n+m] and a mask of the x rows [n+m]."""
    x, y = is_x, ~is_x
    n, m = int(x.sum()), int(y.sum())
    kxx, kyy, kxy = k[np.ix_(x, x)], k[np.ix_(y, y)], k[np.ix_(x, y)]
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
    )


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, n_permutations: int = 500, seed: int = 0
) -> tuple[float, float, float]:
    """(MMD², p-value, bandwidth) of samples x [n, D] and y [m, D], n, m ≥ 2.

    Gaussian kernel exp(-d² / (2 σ²)) with σ² = the median pairwise squared distance / 2 of the
    pooled sample. The p-value is (1 + #permutations with MMD² ≥ observed) / (1 + n_permutations).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"MMD needs at least 2 examples on each side, got {len(x)} and {len(y)}")
    pooled = np.concatenate([x, y])
    d2 = _sq_distances(pooled)
    off_diagonal = d2[~np.eye(len(pooled), dtype=bool)]
    sigma2 = max(float(np.median(off_diagonal)) / 2.0, 1e-12)
    k = np.exp(-d2 / (2.0 * sigma2))
    is_x = np.zeros(len(pooled), dtype=bool)
    is_x[: len(x)] = True
    observed = _mmd2_from_kernel(k, is_x)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(n_permutations):
        exceed += _mmd2_from_kernel(k, rng.permutation(is_x)) >= observed
    return observed, (1 + exceed) / (1 + n_permutations), float(np.sqrt(sigma2))


# --- fidelity per window and per slice --------------------------------------------------------------


def window_start(stamp: dt.datetime, window: dt.timedelta, origin: dt.datetime) -> dt.datetime:
    return origin + window * ((stamp - origin) // window)


def agreement_by_window(
    timestamps: Sequence[dt.datetime], agree: np.ndarray, window: dt.timedelta
) -> list[dict[str, Any]]:
    """Per window of length ``window`` (aligned on the first timestamp): start, n, agreement."""
    if not len(timestamps):
        return []
    origin = min(timestamps)
    groups: dict[dt.datetime, list[float]] = {}
    for stamp, a in zip(timestamps, agree, strict=True):
        groups.setdefault(window_start(stamp, window, origin), []).append(float(a))
    return [
        {"start": start.isoformat(), "n": len(v), "agreement": float(np.mean(v))} for start, v in sorted(groups.items())
    ]


def agreement_by_slice(tags: Sequence[dict[str, str]], agree: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """``{slice: {value: {n, agreement}}}`` from per-example tags and agreement [n]."""
    out: dict[str, dict[str, list[float]]] = {}
    for t, a in zip(tags, agree, strict=True):
        for name, value in t.items():
            out.setdefault(name, {}).setdefault(value, []).append(float(a))
    return {
        name: {value: {"n": len(v), "agreement": float(np.mean(v))} for value, v in sorted(vals.items())}
        for name, vals in sorted(out.items())
    }


# --- the whole check -------------------------------------------------------------------------------


@dataclass
class MonitorResult:
    window: dict[str, str | None]
    n_traffic: int
    n_sampled: int
    agreement: float | None  # served answers vs the teacher, on the sample
    student_agreement: float | None  # only the inputs the student answered
    escalated_share: float | None
    floor: float
    windows: list[dict[str, Any]]
    slices: dict[str, dict[str, dict[str, float]]]
    drift: dict[str, float] | None  # mmd2, p_value, bandwidth, n_reference, n_traffic
    alpha: float
    alerts: list[str] = field(default_factory=list)
    refresh: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(
        default_factory=list
    )  # per sampled input: input, tags, served, teacher, agree

    @property
    def ok(self) -> bool:
        return not self.alerts

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def check_traffic(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    teacher: Callable[[Sequence[str]], np.ndarray],
    reference_embeddings: np.ndarray | None,
    embed: Callable[[Sequence[str]], np.ndarray] | None,
    floor: float,
    alpha: float = 0.01,
    sample: int = 200,
    window: dt.timedelta = dt.timedelta(days=1),
    tagger: Callable[[str], dict[str, str]] = lambda _: {},
    seed: int = 0,
    n_permutations: int = 500,
) -> MonitorResult:
    """Fidelity and drift of traffic ``rows`` (as :func:`distil.serve.traffic.read_traffic` gives them).

    ``teacher`` maps inputs to [n, L] distributions over ``labels``; ``embed`` maps inputs to
    [n, D] embeddings comparable with ``reference_embeddings`` [r, D] (drift is skipped when
    either is None). At most ``sample`` rows are checked, drawn without replacement with ``seed``.
    """
    rows = [r for r in rows if r.get("distribution") is not None]
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(rows), size=min(sample, len(rows)), replace=False).tolist()) if rows else []
    chosen = [rows[i] for i in picked]
    alerts: list[str] = []
    agreement = student_agreement = escalated = None
    windows: list[dict[str, Any]] = []
    slices: dict[str, dict[str, dict[str, float]]] = {}
    examples: list[dict[str, Any]] = []
    if chosen:
        inputs = [r["input"] for r in chosen]
        teacher_probs = np.asarray(teacher(inputs), dtype=np.float64)
        served = np.array([r["distribution"] for r in chosen], dtype=np.float64)
        agree = (served.argmax(1) == teacher_probs.argmax(1)).astype(np.float64)
        # a student_fallback row is the student's answer (the teacher was saturated): the student's, not escalated
        by_student = np.array([r["route"] != "teacher" for r in chosen])
        agreement = float(agree.mean())
        student_agreement = float(agree[by_student].mean()) if by_student.any() else None
        escalated = float(1.0 - by_student.mean())
        windows = agreement_by_window([r["timestamp"] for r in chosen], agree, window)
        tags = [tagger(t) for t in inputs]
        slices = agreement_by_slice(tags, agree)
        examples = [
            {
                "input": r["input"],
                "tags": t,
                "route": r["route"],
                "served": labels[int(s.argmax())],
                "teacher": labels[int(p.argmax())],
                "teacher_confidence": float(p.max()),
                "agree": bool(a),
            }
            for r, t, s, p, a in zip(chosen, tags, served, teacher_probs, agree, strict=True)
        ]
        if agreement < floor:
            alerts.append(f"fidelity {agreement:.3f} on {len(chosen)} sampled requests is below the floor {floor:.3f}")
    drift = None
    if embed is not None and reference_embeddings is not None and len(chosen) >= 2 and len(reference_embeddings) >= 2:
        traffic_embeddings = np.asarray(embed([r["input"] for r in chosen]))
        mmd2, p_value, bandwidth = mmd_permutation_test(reference_embeddings, traffic_embeddings, n_permutations, seed)
        drift = {
            "mmd2": mmd2,
            "p_value": p_value,
            "bandwidth": bandwidth,
            "n_reference": len(reference_embeddings),
            "n_traffic": len(chosen),
        }
        if p_value < alpha:
            alerts.append(f"input drift: MMD² {mmd2:.4f} with p = {p_value:.4f} < {alpha} against the training inputs")
    stamps = [r["timestamp"] for r in rows]
    return MonitorResult(
        window={
            "since": min(stamps).isoformat() if stamps else None,
            "until": max(stamps).isoformat() if stamps else None,
        },
        n_traffic=len(rows),
        n_sampled=len(chosen),
        agreement=agreement,
        student_agreement=student_agreement,
        escalated_share=escalated,
        floor=floor,
        windows=windows,
        slices=slices,
        drift=drift,
        alpha=alpha,
        alerts=alerts,
        examples=examples,
    )


def refresh_due(last_trained: dt.datetime | None, refresh_days: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """When the next refresh is due per the maintenance cadence, and whether that is now."""
    now = now or dt.datetime.now(dt.UTC)
    if last_trained is None:
        return {"last_trained": None, "due": None, "overdue": False, "days_left": None}
    due = last_trained + dt.timedelta(days=refresh_days)
    return {
        "last_trained": last_trained.isoformat(),
        "due": due.isoformat(),
        "overdue": now >= due,
        "days_left": round((due - now).total_seconds() / 86400, 1),
    }


@dataclass(frozen=True)
class TargetInput:
    """A traffic input the next round should label: its slice tags, and why it was picked."""

    input: str
    tags: dict[str, str]  # slice name -> value, as records carry them
    reason: str  # disagreed (served answer ≠ teacher) or escalated (the student was unsure)


def targets_from_result(result: MonitorResult, include_escalated: bool = True) -> list[TargetInput]:
    """The checked traffic the student got wrong (served answer ≠ teacher), plus, optionally, the
    inputs it escalated (it was unsure of them): targets for ``distil iterate --from-traffic``."""
    out: list[TargetInput] = []
    seen: set[str] = set()
    for ex in result.examples:
        reason = (
            "disagreed"
            if not ex["agree"]
            else ("escalated" if include_escalated and ex["route"] != "student" else None)  # or should have been
        )
        if reason is None or not ex["input"] or ex["input"] in seen:  # no input: the spec keeps no traffic text
            continue
        seen.add(ex["input"])
        out.append(TargetInput(ex["input"], dict(ex["tags"]), reason))
    return out
