"""``distil report``: one self-contained HTML file (plots inline as base64 PNG) and a Markdown summary
fit for a pull request, both written atomically into the run folder.

Everything comes from files and rows other steps wrote: evaluation.json, curve.json, the curated
dataset's report.json, the ledger (gate, teachers, decisions) and the spec.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from distil.errors import EvaluationError
from distil.evaluate import plots
from distil.evaluate.run import EVALUATION_FILE, curated_dataset_for, latest_run_id

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
METRICS = ("accuracy", "macro_f1", "agreement", "kl", "js", "ece", "p50_ms", "p95_ms", "throughput_per_s", "params", "size_bytes", "peak_memory_bytes")

HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
 table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
 th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
 th:first-child, td:first-child, td.text { text-align: left; }
 .pass { color: #1a7f37; font-weight: 600; } .fail { color: #cf222e; font-weight: 600; }
 .decision { font-size: 1.3em; padding: 0.4em 0.8em; display: inline-block; border-radius: 4px; background: #f3f3f3; }
 figure { margin: 1em 0; } img.plot { max-width: 100%; border: 1px solid #eee; }
 .note { color: #666; font-style: italic; }
</style></head>
<body>
<h1>{{ title }}</h1>
<p>Run <code>{{ run_id }}</code> · task {{ task_kind }} · play {{ play }} · evaluated on {{ n_test }} held-out examples{% if n_gold %} and {{ n_gold }} gold examples{% endif %}.</p>

<h2>Verdict</h2>
{% if decision %}<p class="decision" id="decision">{{ decision.decision }}</p>
<p>{{ decision.reason }} — signed by {{ decision.validator }} (validator; driver {{ decision.driver }}).</p>
{% else %}<p class="note" id="decision">No decision recorded yet: run <code>distil decide --as {{ validator }}</code>.</p>{% endif %}
<table id="verdict">
<thead><tr><th>threshold</th><th>value</th><th>limit</th><th>margin</th><th>result</th><th>detail</th></tr></thead>
<tbody>
{% for c in checks %}<tr><td>{{ c.name }}</td><td>{{ fmt(c.value) }}</td><td>{{ fmt(c.threshold) }}</td><td>{{ fmt(c.margin) }}</td>
<td class="{{ 'pass' if c.passed else 'fail' }}">{{ 'pass' if c.passed else 'fail' }}</td><td class="text">{{ c.detail }}</td></tr>
{% else %}<tr><td colspan="6" class="text">The locked gate sets no thresholds.</td></tr>{% endfor %}
</tbody></table>
<p>Gate version {{ gate.version }} locked by {{ gate.locked_by }} ({{ gate.sha256 }}).</p>

<h2>Teacher, baseline and student</h2>
<table id="metrics"><thead><tr><th>model</th>{% for m in metrics %}<th>{{ m }}</th>{% endfor %}</tr></thead>
<tbody>{% for name in models %}<tr><td>{{ name }}</td>{% for m in metrics %}<td>{{ fmt(evaluation[name][m]) }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
<p class="note">Latency at batch 1 over {{ latency.requests }} requests after {{ latency.warmup }} warm-up calls, throughput at batch {{ latency.batch_size }}, {{ latency.threads }} torch thread(s) for every model; the teacher is timed with its few-shot prompt, the student with the bare input. Peak memory: {{ latency.memory_method }}.</p>

{% for p in plot_list %}<figure><figcaption><strong>{{ p.title }}</strong></figcaption>
{% if p.png %}<img class="plot" id="plot-{{ p.id }}" alt="{{ p.title }}" src="data:image/png;base64,{{ p.png }}">
{% else %}<p class="note">{{ p.missing }}</p>{% endif %}</figure>
{% endfor %}

<h2>Slices</h2>
<table id="slices"><thead><tr><th>slice</th><th>n</th>{% for name in models %}<th>{{ name }} agreement [95% CI]</th>{% endfor %}<th>student accuracy</th></tr></thead>
<tbody>{% for row in slice_rows %}<tr><td>{{ row.key }}</td><td>{{ row.n }}</td>{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}<td>{{ row.accuracy }}</td></tr>{% endfor %}</tbody></table>

<h2>Cost</h2>
<p>Teacher {{ fmt(cost.teacher_per_1m_requests) }} vs student {{ fmt(cost.student_per_1m_requests) }} {{ cost.currency }} per 1M requests;
at {{ fmt(cost.monthly_requests) }} requests a month the student saves {{ fmt(cost.monthly_savings) }} {{ cost.currency }} a month and repays the build cost of {{ fmt(cost.build_cost) }}
{% if cost.payback_months is not none %}in {{ fmt(cost.payback_months) }} months{% else %}never{% endif %}.</p>

<h2>Provenance</h2>
<table id="teachers"><thead><tr><th>teacher</th><th>source</th><th>licence</th><th>distillation permitted</th><th>reviewed by</th><th>fingerprint</th></tr></thead>
<tbody>{% for t in teachers %}<tr><td>{{ t.id }}</td><td class="text">{{ t.source }}</td><td class="text">{{ t.licence }}</td><td class="text">{{ t.permitted }}</td><td class="text">{{ t.reviewed }}</td><td class="text"><code>{{ t.fingerprint }}</code></td></tr>{% endfor %}</tbody></table>
<table id="data"><tbody>{% for k, v in data_rows %}<tr><td>{{ k }}</td><td class="text">{{ v }}</td></tr>{% endfor %}</tbody></table>
<h3>What curation removed</h3>
{% if filter_rows %}<table id="filters"><thead><tr><th>filter</th><th>details</th></tr></thead>
<tbody>{% for k, v in filter_rows %}<tr><td>{{ k }}</td><td class="text">{{ v }}</td></tr>{% endfor %}</tbody></table>
{% else %}<p class="note">The curated dataset has no report.json.</p>{% endif %}
</body></html>
"""


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 10_000 else f"{value:.3g}" if abs(value) < 0.01 and value != 0 else f"{value:,.3f}"
    return str(value)


def _ci_cell(row: dict[str, Any] | None) -> str:
    if not row or row.get("agreement") is None:
        return "–"
    lo, hi = (row.get("agreement_ci") or [None, None])[:2]
    return f"{row['agreement']:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _write_atomic(text: str, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; reports are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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


def report_context(project: Any, run_id: str) -> dict[str, Any]:
    """Everything the HTML and Markdown need, read from the run folder, the ledger and the spec."""
    run_dir = project.runs_dir / run_id
    evaluation = _read_json(run_dir / EVALUATION_FILE)
    if evaluation is None:
        raise EvaluationError(f"report: {run_dir / EVALUATION_FILE} not found", hint=f"run `distil evaluate {run_id}` first")
    spec = project.spec
    decisions = project.ledger.rows("decisions", "run_id = ?", (run_id,))
    decision = None
    if decisions:
        event = next(e for e in project.ledger.events(kind="decision", newest_first=True) if e.seq == decisions[0]["event_seq"])
        decision = {**decisions[0], "reason": event.payload.get("reason", "")}
    fingerprints = {r["teacher_id"]: r["fingerprint"] for r in reversed(project.ledger.rows("teachers"))}
    teachers = [
        {
            "id": t.id,
            "source": t.source,
            "licence": (t.licence.name or t.licence.terms) if t.licence else "(missing)",
            "permitted": t.licence.distillation_permitted if t.licence else "unknown",
            "reviewed": f"{t.licence.reviewed_by} {t.licence.reviewed_at or ''}".strip() if t.licence else "",
            "fingerprint": fingerprints.get(t.id, "not registered"),
        }
        for t in spec.teachers
    ]
    try:
        dataset_dir, dataset_hash = curated_dataset_for(project, run_id)
    except EvaluationError:
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
        _flatten("", curation, filter_rows)

    slice_rows = []
    for name, values in (evaluation["student"].get("slices") or {}).items():
        for value, row in values.items():
            slice_rows.append(
                {
                    "key": f"{name}={value}",
                    "n": row.get("n"),
                    "cells": [_ci_cell((evaluation[m].get("slices") or {}).get(name, {}).get(value)) for m in ("teacher", "baseline", "student")],
                    "accuracy": fmt(row.get("accuracy")),
                }
            )
    curve = _read_json(run_dir / "curve.json")
    plot_list = [
        {"id": "slices", "title": "Fidelity per slice", "png": plots.slice_fidelity(evaluation), "missing": "No slices in the held-out split."},
        {"id": "reliability", "title": "Reliability diagram", "png": plots.reliability_diagram(evaluation), "missing": "No label distributions (generation task)."},
        {"id": "latency", "title": "Latency histogram", "png": plots.latency_histogram(evaluation), "missing": "No latency samples."},
        {"id": "curves", "title": "Training curves", "png": plots.training_curves(curve) if curve is not None else None, "missing": "The run has no curve.json."},
        {"id": "cost", "title": "Cost and payback", "png": plots.cost_payback(evaluation["cost"]), "missing": "No cost figures."},
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
        "checks": gate.get("checks") or [],
        "gate": gate,
        "evaluation": evaluation,
        "models": ("teacher", "baseline", "student"),
        "metrics": METRICS,
        "latency": evaluation["student"].get("latency") or {},
        "plot_list": plot_list,
        "slice_rows": slice_rows,
        "cost": evaluation["cost"],
        "teachers": teachers,
        "data_rows": data_rows,
        "filter_rows": filter_rows,
    }


def render_html(context: dict[str, Any]) -> str:
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(HTML_TEMPLATE).render(**context, fmt=fmt)


def render_markdown(context: dict[str, Any]) -> str:
    """A short summary for a pull request: verdict, gate table, headline metrics, cost."""
    ev = context["evaluation"]
    decision = context["decision"]
    lines = [f"## {context['title']} — run `{context['run_id']}`", ""]
    if decision:
        lines += [f"**Decision: {decision['decision']}** — {decision['reason']} (validator {decision['validator']}, driver {decision['driver']})", ""]
    else:
        lines += ["**Decision: not recorded yet**", ""]
    lines += ["| threshold | value | limit | margin | result |", "|---|---:|---:|---:|---|"]
    for c in context["checks"]:
        lines.append(f"| {c['name']} | {fmt(c['value'])} | {fmt(c['threshold'])} | {fmt(c['margin'])} | {'✅ pass' if c['passed'] else '❌ fail'} |")
    cols = ("accuracy", "agreement", "kl", "ece", "p95_ms", "throughput_per_s", "params")
    lines += ["", "| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name in context["models"]:
        lines.append(f"| {name} | " + " | ".join(fmt(ev[name].get(c)) for c in cols) + " |")
    cost = context["cost"]
    payback = f"{cost['payback_months']:.1f} months" if cost.get("payback_months") is not None else "never"
    lines += [
        "",
        f"Cost per 1M requests: teacher {fmt(cost['teacher_per_1m_requests'])}, student {fmt(cost['student_per_1m_requests'])} {cost['currency']}; "
        f"monthly savings {fmt(cost['monthly_savings'])}; payback {payback}.",
        "",
        f"Held-out examples: {context['n_test']}" + (f"; gold examples: {context['n_gold']}" if context["n_gold"] else "") + ".",
        "",
    ]
    return "\n".join(lines)


def write_report(project: Any, run_id: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` into the run folder; returns their paths."""
    run_id = run_id or latest_run_id(project)
    context = report_context(project, run_id)
    run_dir = project.runs_dir / run_id
    html_path = _write_atomic(render_html(context), run_dir / REPORT_HTML)
    md_path = _write_atomic(render_markdown(context), run_dir / REPORT_MD)
    return html_path, md_path
