"""``distil report``: one self-contained HTML file (plots inline as base64 PNG) and a Markdown summary
fit for a pull request, both written atomically into the run folder.

Everything comes from files and rows other steps wrote: evaluation.json, curve.json, the curated
dataset's report.json, the ledger (gate, teachers, decisions) and the spec. After launch, three more
sections appear when their files exist: the distilled and the int8-quantized student side by side
(``<run>/evaluation.quantized.json`` from ``distil export --quantize int8``), the router
(``<run>/router.json`` from ``distil serve``) and the newest monitor report
(``.distil/monitor/monitor-<time>.{json,png}`` from ``distil monitor``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from distil.errors import DataError, EvaluationError, RunError
from distil.evaluate import figures, plots
from distil.files import write_text_atomic
from distil.licences.review import duty_lines
from distil.runs import RunDir, run_or_latest
from distil.teachers.urls import public_source

MONITOR_DIR = "monitor"
# (key, heading) of the distilled-vs-quantized table; accuracy and p50_ms only when a block has them
VARIANT_METRICS = (
    ("agreement", "agreement"),
    ("agreement_with_float", "agreement with float"),
    ("kl", "KL"),
    ("js", "JS"),
    ("accuracy", "accuracy"),
    ("size_bytes", "size (bytes)"),
    ("p50_ms", "p50 ms / input"),
)
OPTIONAL_VARIANT_METRICS = ("accuracy", "p50_ms")
METRICS = (
    "accuracy",
    "macro_f1",
    "agreement",
    "kl",
    "js",
    "ece",
    "p50_ms",
    "p95_ms",
    "throughput_per_s",
    "params",
    "size_bytes",
    "served_bytes",
    "peak_memory_bytes",
)
# What each measure is called on the page; the model table has a row per measure, so it never outgrows the page.
HEADINGS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "agreement": "agreement with the teacher",
    "kl": "KL(teacher ‖ model)",
    "js": "JS divergence",
    "ece": "ECE",
    "p50_ms": "p50 latency (ms)",
    "p95_ms": "p95 latency (ms)",
    "throughput_per_s": "throughput (inputs/s)",
    "params": "parameters",
    "size_bytes": "size on disk (bytes)",
    "served_bytes": "size in memory (bytes)",
    "peak_memory_bytes": "peak memory (bytes)",
}
MODELS = ("teacher", "baseline", "student")

# The page lives in templates/report.html.j2 next to this module; every value it shows is escaped.
HTML_TEMPLATE = "report.html.j2"
_ENVIRONMENT = Environment(
    loader=PackageLoader("distil.evaluate", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return (
            f"{value:,.0f}"
            if abs(value) >= 10_000
            else f"{value:.3g}"
            if abs(value) < 0.01 and value != 0
            else f"{value:,.3f}"
        )
    return str(value)


def _ci_cell(row: dict[str, Any] | None) -> str:
    if not row or row.get("agreement") is None:
        return "–"
    lo, hi = (row.get("agreement_ci") or [None, None])[:2]
    return f"{row['agreement']:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def measured_on(evaluation: dict[str, Any]) -> dict[str, str]:
    """For each measure of the model table, the items it was computed on: the test split's size, how many of them
    carry a gold label, what ECE was measured against, which inputs were timed."""
    student = evaluation["student"]
    n, with_gold = student.get("n"), student.get("n_gold")
    gold_set = (student.get("gold") or {}).get("n")
    latency = student.get("latency") or {}
    labelled = (
        f"test split: the {fmt(with_gold)} of {fmt(n)} items with a gold label"
        if with_gold
        else "test split: no item has a gold label" + (" (see the gold-set rows)" if gold_set else "")
    )
    reference = "their gold labels" if student.get("ece_reference") == "gold" else "the teacher's top label"
    timed = "the gold set's" if gold_set else "the test split's"
    return {
        "accuracy": labelled,
        "macro_f1": labelled,
        "agreement": f"test split: {fmt(n)} items, against the teacher's answers",
        "kl": f"test split: {fmt(n)} items, against the teacher's distributions",
        "js": f"test split: {fmt(n)} items, against the teacher's distributions",
        "ece": f"test split: {fmt(n)} items, against {reference}",
        "p50_ms": f"{fmt(latency.get('requests'))} requests at batch 1 on {timed} inputs, "
        f"{fmt(latency.get('threads'))} thread(s)",
        "p95_ms": f"{fmt(latency.get('requests'))} requests at batch 1 on {timed} inputs",
        "throughput_per_s": f"batches of {fmt(latency.get('batch_size'))} of {timed} inputs",
        "params": "the model's weights",
        "size_bytes": "the model's files as stored (a quantized file is smaller than its weights in memory)",
        "served_bytes": "the model's weights in memory once loaded, as it serves",
        "peak_memory_bytes": latency.get("memory_method") or "–",
    }


def model_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The model table: a row per measure (teacher, baseline, student side by side) with the items it came from.
    The gold set's figures are not repeated here: they lead the report in a section of their own."""
    sources = measured_on(evaluation)
    return [
        {
            "key": key,
            "heading": HEADINGS.get(key, key),
            "cells": [fmt(evaluation[m].get(key)) for m in MODELS],
            "source": sources.get(key, ""),
        }
        for key in METRICS
    ]


def check_rows(checks: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each gate check as the tables show it: value, 95% interval, limit, p-value, n, status (pass / FAIL / undecided),
    detail."""
    rows = []
    for c in checks:
        status = c.get("status") or ("pass" if c.get("passed") else "FAIL")
        lo, hi = (c.get("interval") or [None, None])[:2]
        detail = c.get("detail", "") + (f" ({c['method']})" if c.get("method") and c.get("method") != "exact" else "")
        rows.append(
            {
                "name": c["name"],
                "value": fmt(c.get("value")),
                "threshold": fmt(c.get("threshold")),
                "interval": f"[{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "–",
                "p_value": "–" if c.get("p_value") is None else f"{c['p_value']:.3g}",
                "n": fmt(c.get("n")),
                "status": status,
                "css": {"pass": "pass", "FAIL": "fail"}.get(status, "undecided"),
                "detail": detail,
            }
        )
    return rows


def cost_view(cost: dict[str, Any]) -> dict[str, Any]:
    """The cost section: one headline sentence and every term with its value, unit and source (older
    evaluations, priced from the spec alone, have no terms and keep their one sentence)."""
    currency = cost.get("currency", "")
    payback = cost.get("payback_months")
    reason = cost.get("payback_reason") or "the student saves nothing"
    if "terms" not in cost:
        when = f"in {fmt(payback)} months" if payback is not None else "never"
        return {
            "terms": [],
            "headline": f"Teacher {fmt(cost.get('teacher_per_1m_requests'))} vs student "
            f"{fmt(cost.get('student_per_1m_requests'))} {currency} per 1M requests; at "
            f"{fmt(cost.get('monthly_requests'))} requests a month the student saves "
            f"{fmt(cost.get('monthly_savings'))} {currency} a month and repays the build cost of "
            f"{fmt(cost.get('build_cost'))} {when}.",
        }
    when = f"pays back in {fmt(payback)} months" if payback is not None else f"is never paid back ({reason})"
    headline = (
        f"At {fmt(cost.get('monthly_requests'))} requests a month the teacher alone costs "
        f"{fmt(cost.get('teacher_monthly'))} {currency}, the distilled route {fmt(cost.get('distilled_monthly'))} "
        f"{currency} (student serving plus {_pct(cost.get('escalated_share'))} escalated to the teacher); the build "
        f"cost of {fmt(cost.get('build_cost'))} {currency} {when}."
    )
    return {"terms": cost["terms"], "headline": headline}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()) and prefix:
        out.append((prefix, ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())))
    elif isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out.append((prefix, "; ".join(json.dumps(v, default=str) if isinstance(v, dict) else fmt(v) for v in value)))
    else:
        out.append((prefix, fmt(value)))


def curation_lines(curation: Any) -> list[str]:
    """The curate report's warnings, then its notes (items no slice rule matched), one line each."""
    if not isinstance(curation, dict):
        return []
    return [str(w) for w in curation.get("warnings") or []] + [f"note: {n}" for n in curation.get("notes") or []]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _pct(value: Any) -> str:
    share = _number(value)
    return "–" if share is None else f"{100 * share:.1f}%"


def _display_path(project: Any, path: Path) -> str:
    try:
        return str(path.relative_to(project.root))
    except ValueError:
        return str(path)


def quantized_section(project: Any, run: RunDir, variant: str = "quantized") -> dict[str, Any] | None:
    """The distilled student and its exported ``variant`` side by side (the int8 ONNX graph, or a GGUF type
    ``gguf-<type>``), from the variant's newest evaluation file; None without it."""
    path = run.variant_evaluation(variant)
    data = _read_json(path)
    if not isinstance(data, dict):
        return None
    exported = "distilled + quantized" if variant == "quantized" else variant
    blocks = [(label, data.get(key)) for key, label in (("distilled", "distilled"), ("quantized", exported))]
    rows = [(label, block) for label, block in blocks if isinstance(block, dict)]
    if not rows:
        return None
    columns = [
        (k, h)
        for k, h in VARIANT_METRICS
        if k not in OPTIONAL_VARIANT_METRICS or any(b.get(k) is not None for _, b in rows)
    ]
    distilled, quantized = (data.get("distilled") or {}), (data.get("quantized") or {})
    size_f, size_q = _number(distilled.get("size_bytes")), _number(quantized.get("size_bytes"))
    agree_f, agree_q = _number(distilled.get("agreement")), _number(quantized.get("agreement"))
    return {
        "variant": variant,
        "path": _display_path(project, path),
        "quantization": data.get("quantization") or "quantization",
        "split": data.get("split") or "held-out",
        "n": data.get("n"),
        "columns": columns,
        "rows": rows,
        "distilled": distilled,
        "quantized": quantized,
        "size_ratio": size_f / size_q if size_f and size_q else None,
        "agreement_delta": agree_q - agree_f if agree_f is not None and agree_q is not None else None,
    }


def router_section(run: RunDir) -> dict[str, Any] | None:
    """The calibrated router from ``router.json`` (written by ``distil serve``); None without it."""
    data = _read_json(run.router)
    if not isinstance(data, dict) or data.get("threshold") is None:
        return None
    keys = (
        "threshold",
        "routed_fidelity",
        "escalated_share",
        "student_fidelity",
        "target",
        "n",
        "blended_cost_per_1m",
        "student_per_1m",
        "teacher_per_1m",
    )
    return {
        **{k: data.get(k) for k in keys},
        "currency": data.get("currency") or "",
        "escalated_pct": _pct(data.get("escalated_share")),
    }


def newest_monitor_report(project: Any) -> Path | None:
    found = sorted((project.state_dir / MONITOR_DIR).glob("monitor-*.json"))
    return found[-1] if found else None


def monitor_section(project: Any) -> dict[str, Any] | None:
    """The newest ``distil monitor`` report (per window, per slice, drift, alerts, its plot); None without one.

    The per-example inputs the report also holds are left out: the report is shared, traffic is not.
    """
    path = newest_monitor_report(project)
    data = _read_json(path) if path else None
    if not isinstance(data, dict):
        return None
    floor = _number(data.get("floor"))
    windows = [
        {**w, "ok": floor is None or (_number(w.get("agreement")) or 0.0) >= floor}
        for w in data.get("windows") or []
        if isinstance(w, dict)
    ]
    slices = [
        {"key": f"{name}={value}", "n": row.get("n"), "agreement": row.get("agreement")}
        for name, values in (data.get("slices") or {}).items()
        if isinstance(values, dict)
        for value, row in values.items()
        if isinstance(row, dict)
    ]
    drift = data.get("drift") if isinstance(data.get("drift"), dict) else None
    alpha = _number(data.get("alpha"))
    p_value = _number(drift.get("p_value")) if drift else None
    window = data.get("window") if isinstance(data.get("window"), dict) else {}
    return {
        "path": _display_path(project, path),
        "since": window.get("since"),
        "until": window.get("until"),
        "n_traffic": data.get("n_traffic"),
        "n_sampled": data.get("n_sampled"),
        "agreement": data.get("agreement"),
        "student_agreement": data.get("student_agreement"),
        "escalated_pct": _pct(data.get("escalated_share")),
        "floor": data.get("floor"),
        "alpha": data.get("alpha"),
        "windows": windows,
        "slices": slices,
        "drift": drift,
        "drifted": p_value is not None and alpha is not None and p_value < alpha,
        "alerts": [str(a) for a in data.get("alerts") or []],
        "refresh": data.get("refresh") if isinstance(data.get("refresh"), dict) else {},
        "png": plots.png_file(path.with_suffix(".png")),
    }


def figures_view(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's tables, gold set first where there is one; every figure with its item count."""
    gold = figures.has_gold(evaluation)
    labelled = None if figures.is_generation(evaluation) else (figures.GOLD if gold else figures.HELD_OUT)
    view: dict[str, Any] = {
        "warnings": evaluation.get("warnings") or figures.label_warnings(evaluation),
        "labels": figures.label_names(evaluation),
        "gold": None,
        "held_out": {
            "n": figures.scored_set(evaluation, "student", figures.HELD_OUT).get("n"),
            "columns": figures.held_out_columns(evaluation),
            "rows": figures.held_out_rows(evaluation),
        },
        "size": {"columns": figures.SIZE_COLUMNS, "rows": figures.size_rows(evaluation)},
        "per_label": None,
    }
    if gold:
        view["gold"] = {
            "n": figures.scored_set(evaluation, "student", figures.GOLD).get("n_gold"),
            "rows": figures.gold_rows(evaluation),
        }
    if labelled is not None:
        view["per_label"] = {
            "set": labelled,
            "reference": "gold labels" if labelled == figures.GOLD else "the teacher's labels",
            "models": figures.per_label_models(labelled),
            "rows": figures.per_label_rows(evaluation, labelled),
            "confusion": figures.confusion_matrices(evaluation, labelled),
        }
    return view


def report_context(project: Any, run_id: str) -> dict[str, Any]:
    """Everything the HTML and Markdown need, read from the run folder, the ledger and the spec."""
    run = RunDir(project, run_id)
    evaluation = _read_json(run.evaluation)
    if evaluation is None:
        raise EvaluationError(f"report: {run.evaluation} not found", hint=f"run `distil evaluate {run_id}` first")
    spec = project.spec
    decisions = project.ledger.verified_rows("decisions", "run_id = ?", (run_id,))
    decision = None
    if decisions:
        event = project.ledger.event(decisions[0]["event_seq"])
        decision = {
            **decisions[0],
            "reason": event.payload.get("reason", ""),
            "signed": bool(event.payload.get("signature")),
        }
    fingerprints = {r["teacher_id"]: r["fingerprint"] for r in reversed(project.ledger.rows("teachers"))}
    teachers = [
        {
            "id": t.id,
            "source": public_source(t.source),
            "licence": (t.licence.name or t.licence.terms) if t.licence else "(missing)",
            "permitted": t.licence.distillation_permitted if t.licence else "unknown",
            "reviewed": f"{t.licence.reviewed_by} {t.licence.reviewed_at or ''}".strip() if t.licence else "",
            "fingerprint": fingerprints.get(t.id, "not registered"),
        }
        for t in spec.teachers
    ]
    try:  # a run the ledger does not know has no dataset to describe; the report says so instead
        data = run.dataset()
        dataset_dir, dataset_hash = data.folder, data.dataset_hash
    except (RunError, DataError):
        dataset_dir, dataset_hash = None, None
    curation = _read_json(dataset_dir / "report.json") if dataset_dir else None
    data_rows = [
        ("seeds", spec.data.seeds),
        ("gold set", spec.data.gold or "none"),
        ("synthetic", f"{spec.data.synthetic}, budget {spec.data.synthetic_budget}"),
        ("curated dataset", f"{dataset_hash} ({dataset_dir.relative_to(project.root) if dataset_dir else '-'})"),
    ]
    filter_rows: list[tuple[str, str]] = []
    if isinstance(curation, dict):
        _flatten("", {k: v for k, v in curation.items() if k != "teacher_agreement"}, filter_rows)
    agreement = curation.get("teacher_agreement") if isinstance(curation, dict) else None

    slice_rows = []
    for name, values in (evaluation["student"].get("slices") or {}).items():
        for value, row in values.items():
            slice_rows.append(
                {
                    "key": f"{name}={value}",
                    "n": row.get("n"),
                    "cells": [
                        _ci_cell((evaluation[m].get("slices") or {}).get(name, {}).get(value))
                        for m in ("teacher", "baseline", "student")
                    ],
                    "accuracy": fmt(row.get("accuracy")),
                }
            )
    curve = _read_json(run.curve)
    plot_list = [
        {
            "id": "slices",
            "title": "Fidelity per slice",
            "png": plots.slice_fidelity(evaluation),
            "missing": "No slices in the held-out split.",
        },
        {
            "id": "reliability",
            "title": "Reliability diagram",
            "png": plots.reliability_diagram(evaluation),
            "missing": "No label distributions (generation task).",
        },
        {
            "id": "latency",
            "title": "Latency histogram",
            "png": plots.latency_histogram(evaluation),
            "missing": "No latency samples.",
        },
        {
            "id": "curves",
            "title": "Training curves",
            "png": plots.training_curves(curve) if curve is not None else None,
            "missing": "The run has no curve.json.",
        },
        {
            "id": "cost",
            "title": "Cost and payback",
            "png": plots.cost_payback(evaluation["cost"]),
            "missing": "No cost figures.",
        },
    ]
    gate = evaluation.get("gate") or {}
    return {
        "title": f"{spec.name}: distillation report",
        "run_id": run_id,
        "task_kind": spec.task.kind,
        "play": spec.play.kind,
        "n_test": evaluation["student"].get("n"),
        "n_gold": (evaluation["student"].get("gold") or {}).get("n"),
        "validator": spec.roles.validator,
        "decision": decision,
        "checks": check_rows(gate.get("checks") or []),
        "gate": gate,
        "evaluation": evaluation,
        "models": MODELS,
        "model_rows": model_rows(evaluation),
        "figures": figures_view(evaluation),
        "latency": evaluation["student"].get("latency") or {},
        "plot_list": plot_list,
        "slice_rows": slice_rows,
        "cost": evaluation["cost"],
        "cost_view": cost_view(evaluation["cost"]),
        "teachers": teachers,
        "duties": duty_lines(spec),
        "data_rows": data_rows,
        "filter_rows": filter_rows,
        "teacher_agreement": teacher_agreement_rows(agreement or {}),
        "curation_warnings": curation_lines(curation),
        "quantized": quantized_section(project, run),
        "gguf_variants": [
            section
            for variant in sorted(run.variants)
            if variant.startswith("gguf-") and (section := quantized_section(project, run, variant))
        ],
        "router": router_section(run),
        "monitor": monitor_section(project),
    }


TEACHER_AGREEMENT_COLUMNS = (
    ("slice", "slice"),
    ("n", "n"),
    ("top_label_agreement", "same top label, all teachers"),
    ("mean_disagreement", "mean disagreement (JSD, 0-1)"),
)


def teacher_agreement_rows(agreement: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The curation report's ``teacher_agreement`` (data.teachers) as table rows, all examples first."""
    keys = sorted(agreement, key=lambda k: (k != "all", k))
    return [
        {
            "slice": key,
            "n": agreement[key]["n"],
            "top_label_agreement": fmt(agreement[key]["top_label_agreement"]),
            "mean_disagreement": fmt(agreement[key]["mean_disagreement"]),
        }
        for key in keys
    ]


def render_html(context: dict[str, Any]) -> str:
    return _ENVIRONMENT.get_template(HTML_TEMPLATE).render(**context, fmt=fmt)


def render_markdown(context: dict[str, Any]) -> str:
    """A short summary for a pull request: verdict, warnings, the gold set's figures, gate table, held-out and size
    figures, cost."""
    decision = context["decision"]
    lines = [f"## {context['title']} — run `{context['run_id']}`", ""]
    if decision:
        signed = "" if decision["signed"] else ", unsigned"
        lines += [
            f"**Decision: {decision['decision']}** — {decision['reason']} (validator {decision['validator']}, driver "
            f"{decision['driver']}{signed})",
            "",
        ]
    else:
        lines += ["**Decision: not recorded yet**", ""]
    view = context["figures"]
    lines += [f"> ⚠️ warning: {w}" for w in view["warnings"]] + ([""] if view["warnings"] else [])
    if view["gold"]:
        lines += _markdown_table(
            f"Gold set ({view['gold']['n']} hand-labelled items)",
            [
                ("model", "model"),
                ("accuracy", "accuracy"),
                ("macro_f1", "macro-F1"),
                ("agreement", "agreement"),
                ("disagreements", "where it differs from the teacher, who is right"),
            ],
            view["gold"]["rows"],
        )
        lines += _per_label_markdown(view)
    lines += [
        "| threshold | value | 95% interval | limit | p-value | n | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    icons = {"pass": "✅ pass", "FAIL": "❌ FAIL", "undecided": "⚠️ undecided"}
    for c in context["checks"]:
        lines.append(
            f"| {c['name']} | {c['value']} | {c['interval']} | {c['threshold']} | {c['p_value']} | {c['n']} | "
            f"{icons.get(c['status'], c['status'])} |"
        )
    lines.append("")
    held_out = view["held_out"]
    lines += _markdown_table(
        f"Held-out split ({held_out['n']} items; the teacher's answers are the reference)",
        [("model", "model"), *held_out["columns"]],
        held_out["rows"],
    )
    sources = measured_on(context["evaluation"])
    lines += [
        f"Accuracy and macro-F1: {sources['accuracy']}; agreement and KL: {sources['kl']}; latency: "
        f"{sources['p95_ms']}.",
        "",
    ]
    if not view["gold"]:
        lines += _per_label_markdown(view)
    lines += _markdown_table(
        "Size (stored: files on disk; served: weights in memory) and speed",
        [("model", "model"), *view["size"]["columns"]],
        view["size"]["rows"],
    )
    view = context["cost_view"]
    lines += [view["headline"]]
    if view["terms"]:
        lines += ["", "| cost term | value | unit | source |", "|---|---:|---|---|"]
        lines += [f"| {t['name']} | {fmt(t['value'])} | {t['unit']} | {t['source']} |" for t in view["terms"]]
    lines += [
        "",
        f"Held-out examples: {context['n_test']}"
        + (f"; gold examples: {context['n_gold']}" if context["n_gold"] else "")
        + ".",
        "",
    ]
    if context.get("curation_warnings"):
        lines += ["Warnings from curate:", ""] + [f"- {w}" for w in context["curation_warnings"]] + [""]
    if context.get("duties"):
        lines += (
            ["Duties the student inherits from its teachers' licences:", ""]
            + [f"- {d}" for d in context["duties"]]
            + [""]
        )
    if context.get("teacher_agreement"):
        title = "Agreement between the labelling teachers, per slice"
        lines += _markdown_table(title, TEACHER_AGREEMENT_COLUMNS, context["teacher_agreement"])
    lines += _after_launch_markdown(context)
    return "\n".join(lines)


def _markdown_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> list[str]:
    """``**title**``, then a table of ``rows`` (dicts) under ``columns`` ((key, heading)), then a blank line."""
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(h for _, h in columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1),
    ]
    lines += ["| " + " | ".join(str(row[k]) for k, _ in columns) + " |" for row in rows]
    return lines + [""]


def _per_label_markdown(view: dict[str, Any]) -> list[str]:
    """Per-label precision and recall of every model, then each model's confusion matrix, on the labelled set."""
    per_label = view["per_label"]
    if not per_label:
        return []
    models, labels = per_label["models"], view["labels"]
    columns = [("label", "label"), ("support", "items")] + [
        (f"{m}.{what}", f"{m} {what}") for m in models for what in ("precision", "recall")
    ]
    rows = [
        {
            "label": r["label"],
            "support": fmt(r["support"]),
            **{f"{m}.{what}": r["cells"][m][what] for m in models for what in ("precision", "recall")},
        }
        for r in per_label["rows"]
    ]
    lines = _markdown_table(f"Per label on the {per_label['set']} set, against {per_label['reference']}", columns, rows)
    for model, matrix in per_label["confusion"].items():
        confusion_columns = [("label", f"{per_label['reference']} ↓ / {model} →")] + [
            (str(j), lab) for j, lab in enumerate(labels)
        ]
        confusion_rows = [
            {"label": lab, **{str(j): v for j, v in enumerate(matrix[i])}} for i, lab in enumerate(labels)
        ]
        lines += _markdown_table(
            f"Confusion of the {model} on the {per_label['set']} set", confusion_columns, confusion_rows
        )
    return lines


def _after_launch_markdown(context: dict[str, Any]) -> list[str]:
    """One line each for the quantized student, the router and the newest monitor report, when present."""
    lines: list[str] = []
    q = context.get("quantized")
    if q:
        d, i8 = q["distilled"], q["quantized"]
        ratio = f" ({fmt(q['size_ratio'])}× smaller)" if q["size_ratio"] else ""
        p50 = (
            f"; p50 {fmt(d.get('p50_ms'))} → {fmt(i8.get('p50_ms'))} ms"
            if d.get("p50_ms") is not None or i8.get("p50_ms") is not None
            else ""
        )
        accuracy = (
            f"; accuracy {fmt(d.get('accuracy'))} → {fmt(i8.get('accuracy'))}"
            if d.get("accuracy") is not None or i8.get("accuracy") is not None
            else ""
        )
        lines += [
            f"**Quantized** ({q['quantization']}): agreement {fmt(d.get('agreement'))} → {fmt(i8.get('agreement'))}, "
            f"KL {fmt(d.get('kl'))} → {fmt(i8.get('kl'))}{accuracy}; agreement with the float model "
            f"{fmt(i8.get('agreement_with_float'))}; size {fmt(d.get('size_bytes'))} → {fmt(i8.get('size_bytes'))} "
            f"bytes{ratio}{p50}.",
            "",
        ]
    for g in context.get("gguf_variants") or []:
        d, e = g["distilled"], g["quantized"]
        ratio = f" ({fmt(g['size_ratio'])}× smaller)" if g["size_ratio"] else ""
        lines += [
            f"**{g['variant']}** ({g['quantization']}): agreement {fmt(d.get('agreement'))} → "
            f"{fmt(e.get('agreement'))}; size {fmt(d.get('size_bytes'))} → {fmt(e.get('size_bytes'))} bytes{ratio}.",
            "",
        ]
    r = context.get("router")
    if r:
        lines += [
            f"**Router**: threshold {fmt(r['threshold'])}, {r['escalated_pct']} escalated to the teacher, routed "
            f"fidelity {fmt(r['routed_fidelity'])} (target {fmt(r['target'])}); blended cost "
            f"{fmt(r['blended_cost_per_1m'])} {r['currency']} per 1M requests.",
            "",
        ]
    m = context.get("monitor")
    if m:
        drift = (
            f"drift MMD² {fmt(m['drift'].get('mmd2'))}, p = {fmt(m['drift'].get('p_value'))}"
            if m["drift"]
            else "no drift test"
        )
        alerts = "; ".join(m["alerts"]) if m["alerts"] else "none"
        lines += [
            f"**Monitor** (`{m['path']}`): agreement {fmt(m['agreement'])} on {fmt(m['n_sampled'])} of "
            f"{fmt(m['n_traffic'])} requests (floor {fmt(m['floor'])}), {m['escalated_pct']} escalated; {drift}; "
            f"alerts: {alerts}.",
            "",
        ]
    return lines


def write_report(project: Any, run_id: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder; returns their paths."""
    run = run_or_latest(project, run_id)
    context = report_context(project, run.run_id)
    html_path = write_text_atomic(run.report_html, render_html(context))
    md_path = write_text_atomic(run.report_md, render_markdown(context))
    return html_path, md_path
