"""The report's plots, each returned as a base64 PNG ready for an inline ``<img src="data:...">``.

Every function takes parts of evaluation.json (or curve.json) and returns None when there is
nothing to draw, so the report shows a note instead of an empty axis.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402

MODELS = ("teacher", "baseline", "student")
COLOURS = {"teacher": "#7f7f7f", "baseline": "#ff7f0e", "student": "#1f77b4"}


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_file(path: Path | None) -> str | None:
    """A PNG another step wrote (the monitor's plot), base64-encoded; None when absent or not a PNG."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return base64.b64encode(data).decode("ascii") if data.startswith(PNG_SIGNATURE) else None


def slice_fidelity(evaluation: Mapping[str, Any]) -> str | None:
    """Grouped bars of top-1 agreement per slice value for teacher / baseline / student, with 95% CIs."""
    keys: list[tuple[str, str]] = []
    for name, values in (evaluation["student"].get("slices") or {}).items():
        keys.extend((name, value) for value in values)
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 3.6))
    width = 0.8 / len(MODELS)
    for m_index, model in enumerate(MODELS):
        slices = evaluation[model].get("slices") or {}
        heights, err_lo, err_hi = [], [], []
        for name, value in keys:
            row = slices.get(name, {}).get(value, {})
            v = row.get("agreement")
            lo, hi = (row.get("agreement_ci") or [None, None])[:2]
            heights.append(v or 0.0)
            err_lo.append(v - lo if v is not None and lo is not None else 0.0)
            err_hi.append(hi - v if v is not None and hi is not None else 0.0)
        xs = [i + (m_index - 1) * width for i in range(len(keys))]
        ax.bar(xs, heights, width, yerr=[err_lo, err_hi], capsize=3, label=model, color=COLOURS[model])
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{n}={v}\n(n={evaluation['student']['slices'][n][v]['n']})" for n, v in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("agreement with teacher")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Fidelity per slice (95% bootstrap CI)")
    return _png(fig)


def reliability_diagram(evaluation: Mapping[str, Any]) -> str | None:
    """Accuracy against mean confidence per bin, for each model; the diagonal is perfect calibration."""
    drawn = False
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], linestyle="--", color="#bbbbbb", label="perfect")
    for model in MODELS:
        bins = [b for b in evaluation[model].get("reliability") or [] if b.get("count")]
        if bins:
            ece = evaluation[model].get("ece")
            label = f"{model} (ECE {ece:.3f})" if ece is not None else model
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                label=label,
                color=COLOURS[model],
            )
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title("Reliability diagram")
    return _png(fig)


def latency_histogram(evaluation: Mapping[str, Any]) -> str | None:
    """Histogram of batch-1 request latencies per model (log-spaced bins: teacher and student differ a lot)."""
    import numpy as np

    samples = {m: (evaluation[m].get("latency") or {}).get("samples_ms") or [] for m in MODELS}
    everything = [x for xs in samples.values() for x in xs if x > 0]
    if not everything:
        return None
    lo, hi = min(everything), max(everything)
    edges = np.geomspace(lo * 0.9, hi * 1.1, 40) if hi > lo else np.linspace(lo * 0.9, lo * 1.1 + 1e-9, 10)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for model in MODELS:
        if samples[model]:
            ax.hist(
                samples[model],
                bins=edges,
                alpha=0.6,
                label=f"{model} p95 {evaluation[model]['p95_ms']:.2f} ms",
                color=COLOURS[model],
            )
    if hi > lo:
        ax.set_xscale("log")
    ax.set_xlabel("latency at batch 1 (ms)")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    ax.set_title("Latency per request")
    return _png(fig)


def _curve_series(curve: Any, prefix: str = "") -> dict[str, tuple[list[float], list[float]]]:
    """Find plottable series in curve.json, whatever its nesting: ``{name: (x, y)}``.

    Accepted shapes: ``{"step": [...], "loss": [...]}``, ``{"student": {...}, "baseline": {...}}``,
    and a list of ``{"step": s, "loss": l, ...}`` rows.
    """
    if isinstance(curve, list) and curve and all(isinstance(r, dict) for r in curve):
        keys = {k for r in curve for k, v in r.items() if isinstance(v, (int, float))}
        curve = {k: [r.get(k) for r in curve] for k in keys}
    if not isinstance(curve, dict):
        return {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    x_key = next((k for k in ("step", "steps", "epoch", "x") if isinstance(curve.get(k), list)), None)
    for key, value in curve.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            out.update(_curve_series(value, f"{prefix}{key} "))
        elif (
            key != x_key
            and isinstance(value, list)
            and value
            and all(isinstance(v, (int, float)) or v is None for v in value)
        ):
            xs = curve[x_key] if x_key and len(curve[x_key]) == len(value) else list(range(1, len(value) + 1))
            pairs = [(x, y) for x, y in zip(xs, value, strict=True) if y is not None]
            out[f"{prefix}{key}"] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return out


# Which panel a curve series goes in, by its last word: each kind of number on an axis of its own, so the
# fidelity (0-1) is not flattened against a learning rate near 0 or an epoch count.
LOSS_PANEL, FIDELITY_PANEL, RATE_PANEL = "loss", "validation fidelity", "learning rate"


def curve_panel(name: str) -> str | None:
    """The panel of series ``name`` ("student loss", "baseline validation_fidelity"); None: not drawn (the epoch
    counter, which is drawn as boundaries, and an objective's notes)."""
    key = name.rsplit(" ", 1)[-1]
    if "loss" in key:
        return LOSS_PANEL
    if key == "lr":
        return RATE_PANEL
    if any(word in key for word in ("fidelity", "agreement", "accuracy")):
        return FIDELITY_PANEL
    return None


def _colour(name: str) -> str | None:
    return next((COLOURS[m] for m in MODELS if name.startswith(f"{m} ")), None)


def epoch_boundaries(series: dict[str, tuple[list[float], list[float]]]) -> list[float]:
    """The steps where the first model's epoch counter moves on (none when the curve has no epochs)."""
    epochs = next((xy for name, xy in sorted(series.items()) if name.rsplit(" ", 1)[-1] == "epoch"), None)
    if epochs is None:
        return []
    xs, ys = epochs
    return [xs[i] - 0.5 for i in range(1, len(xs)) if ys[i] != ys[i - 1]]


def training_curves_figure(curve: Any) -> Any:
    """One panel each for the losses, the validation fidelity (0-1) and the learning rate, sharing the step axis;
    the epoch boundaries dotted. None when curve.json has nothing to draw."""
    series = _curve_series(curve)
    panels: dict[str, list[str]] = {}
    for name in sorted(series):
        panel = curve_panel(name)
        if panel is not None and series[name][0]:
            panels.setdefault(panel, []).append(name)
    order = [p for p in (LOSS_PANEL, FIDELITY_PANEL, RATE_PANEL) if p in panels]
    if not order:
        return None
    heights = {LOSS_PANEL: 2.0, FIDELITY_PANEL: 2.0, RATE_PANEL: 1.0}
    fig, axes = plt.subplots(
        len(order),
        1,
        sharex=True,
        figsize=(6.5, 1.4 + 1.6 * sum(heights[p] for p in order) / 2),
        gridspec_kw={"height_ratios": [heights[p] for p in order]},
        squeeze=False,
    )
    boundaries = epoch_boundaries(series)
    for ax, panel in zip(axes[:, 0], order, strict=True):
        for name in panels[panel]:
            xs, ys = series[name]
            sparse = panel == FIDELITY_PANEL  # one point per validation check: markers show where they are
            ax.plot(xs, ys, label=name, color=_colour(name), marker="o" if sparse else None, markersize=3)
        for x in boundaries:
            ax.axvline(x, color="#bbbbbb", linestyle=":", linewidth=0.8)
        ax.set_ylabel(panel, fontsize=8)
        ax.legend(fontsize=7, loc="best")
        if panel == FIDELITY_PANEL:
            ax.set_ylim(0, 1.02)
        if panel == RATE_PANEL:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes[-1, 0].set_xlabel("optimiser step" + (" (epochs dotted)" if boundaries else ""))
    axes[0, 0].set_title("Training curves")
    return fig


def training_curves(curve: Any) -> str | None:
    """:func:`training_curves_figure` as a PNG."""
    fig = training_curves_figure(curve)
    return _png(fig) if fig is not None else None


def cost_payback(cost: Mapping[str, Any]) -> str | None:
    """Cumulative net saving per month against the build cost; the payback month is marked."""
    series = cost.get("cumulative_net") or []
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    months = list(range(len(series)))
    ax.plot(months, series, color=COLOURS["student"], label="cumulative net saving")
    ax.axhline(0, color="#888888", linewidth=0.8)
    payback = cost.get("payback_months")
    if payback is not None and payback <= months[-1]:
        ax.axvline(payback, color="#2ca02c", linestyle="--", label=f"payback {payback:.1f} months")
    ax.set_xlabel("months after launch")
    ax.set_ylabel(cost.get("currency", ""))
    ax.legend(fontsize=8)

    def per_1m(key: str) -> str:
        value = cost.get(key)
        return "–" if value is None else f"{value:,.2f}"

    distilled = (
        "distilled_per_1m_requests" if "distilled_per_1m_requests" in cost else "student_per_1m_requests"
    )  # older evaluations
    ax.set_title(
        f"Teacher {per_1m('teacher_per_1m_requests')} vs distilled {per_1m(distilled)} {cost.get('currency', '')} "
        "per 1M requests",
        fontsize=9,
    )
    return _png(fig)
