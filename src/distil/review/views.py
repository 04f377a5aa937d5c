"""What each review page shows, read from the spec, the ledger and the run folders (no second store).

One function per page returns a plain dict the template renders. Everything a decision rests on is read
through the ledger's verified rows; a row that does not hold raises ``LedgerError`` and the page says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from distil.decide import DECIDED_VARIANT, decide_outcome, evaluation_rounds, gate_checks
from distil.errors import DistilError, RunError
from distil.evaluate.figures import held_out_accuracy
from distil.evaluate.plots import _curve_series  # the one reader of curve.json's shapes
from distil.evaluate.predictions import read_predictions
from distil.evaluate.report import fmt, monitor_section
from distil.licences.review import recorded_reviews, registry_entry, review_covers
from distil.review.charts import RoundPoint, line_chart, reliability_chart, rounds_chart
from distil.runs import RunDir
from distil.serve.traffic import read_traffic, traffic_dir
from distil.spec.gate import gate_changes, locked_gate
from distil.teachers.urls import public_source

MODELS = ("teacher", "baseline", "student")
DISAGREEMENT_SPLITS = ("test", "gold")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def interval_text(value: Any, interval: Sequence[Any] | None) -> str:
    """``0.792 [0.60, 0.91]``: a value with its 95% interval, the way every page writes one."""
    if value is None:
        return "–"
    lo, hi = (list(interval or []) + [None, None])[:2]
    text = fmt(value)
    return text + (f" [{lo:.2f}, {hi:.2f}]" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else "")


# --- Project ---------------------------------------------------------------------------------------


def project_view(project: Any) -> dict[str, Any]:
    """The play, the roles, the teachers and their licences, every locked gate version, the locked evaluation sets."""
    spec = project.spec
    reviews = recorded_reviews(project)
    teachers = []
    for t in spec.teachers:
        entry = registry_entry(t.licence)
        review = reviews.get(t.id)
        teachers.append(
            {
                "id": t.id,
                "source": public_source(t.source),
                "licence": (t.licence.name or t.licence.id or t.licence.terms) if t.licence else "(missing)",
                "permitted": t.licence.distillation_permitted if t.licence else "unknown",
                "reviewed_by": t.licence.reviewed_by if t.licence else "",
                "reviewed_at": str(t.licence.reviewed_at or "") if t.licence else "",
                "recorded_review": (
                    f"{review.reviewer}, {review.ts[:10]}"
                    + (", signed" if review.signed else "")
                    + ("" if review_covers(review, t) else " (of an older licence record)")
                )
                if review
                else "none recorded",
                "clause": entry.clause if entry else "",
                "duties": [d.text for d in entry.duties] if entry else [],
            }
        )
    locked = locked_gate(project)
    gates = []
    for row in project.ledger.verified_rows("gates", order="event_seq ASC"):
        event = project.ledger.event(row["event_seq"])
        gates.append(
            {
                "version": row["version"],
                "sha256": row["sha256"],
                "locked_by": row["locked_by"],
                "reason": row["reason"],
                "when": event.ts[:19] if event else "",
                "signed": bool(event and event.payload.get("signature")),
            }
        )
    changes = gate_changes(locked, spec) if locked else []
    sets = []
    for row in project.ledger.verified_rows("evaluation_sets", order="event_seq ASC"):
        sets.append(
            {
                "name": row["name"],
                "gate_version": row["gate_version"],
                "sha256": row["sha256"],
                "size": row["size"],
                "path": row["path"],
                "reason": row["reason"],
            }
        )
    return {
        "name": spec.name,
        "task": spec.task.kind,
        "labels": spec.task.label_names,
        "play": spec.play.kind,
        "roles": [(role, getattr(spec.roles, role)) for role in ("sponsor", "driver", "validator", "operator")],
        "keys": sorted(spec.roles.keys or {}),
        "teachers": teachers,
        "gates": gates,
        "thresholds": sorted((locked.thresholds if locked else spec.gate.model_dump(mode="json")).items()),
        "gate_locked": locked is not None,
        "gate_changes": changes,
        "evaluation_sets": sets,
    }


# --- Runs and rounds -------------------------------------------------------------------------------


def _decisions(project: Any) -> list[dict[str, Any]]:
    """Every recorded decision, newest first: who decided what on which run, when, and why."""
    out = []
    for row in project.ledger.verified_rows("decisions"):
        event = project.ledger.event(row["event_seq"])
        payload = event.payload if event else {}
        out.append(
            {
                **row,
                "when": event.ts[:19] if event else "",
                "reason": payload.get("reason", ""),
                "ruled": payload.get("ruled", row["decision"]),
                "gate_version": payload.get("gate_version"),
                "signed": bool(payload.get("signature")),
            }
        )
    return out


def rounds_view(project: Any) -> dict[str, Any]:
    """One row per evaluated run (oldest first) with the locked gate's checks, and the chart per round."""
    locked = locked_gate(project)
    thresholds = locked.thresholds if locked else project.spec.gate.model_dump(mode="json")
    rows = [
        r for r in project.ledger.verified_rows("evaluations", order="event_seq ASC") if r["variant"] == DECIDED_VARIANT
    ]
    latest: dict[str, dict[str, Any]] = {}
    for r in rows:
        latest.pop(r["run_id"], None)
        latest[r["run_id"]] = r  # re-insert: ordered by each run's latest evaluation, as decide orders rounds
    decided = {}
    for d in reversed(_decisions(project)):
        decided[d["run_id"]] = d
    rounds = []
    for number, r in enumerate(latest.values(), start=1):
        summary = json.loads(r["summary"])
        event = project.ledger.event(r["event_seq"])
        checks = [asdict(c) for c in gate_checks(thresholds, summary)]
        evidence = summary.get("evidence") or {}
        rounds.append(
            {
                "number": number,
                "run_id": r["run_id"],
                "when": event.ts[:19] if event else "",
                "checks": checks,
                "fidelity": evidence.get("agreement") or {},
                "quality": evidence.get("quality_ratio") or {},
                "decision": decided.get(r["run_id"]),
            }
        )
    verdict = None
    if rounds:
        verdict = decide_outcome(
            thresholds,
            [json.loads(r["summary"]) for r in latest.values()],
            iterations_used=len(project.ledger.events(kind="iteration")),
        )
    series = {
        "fidelity": [
            RoundPoint(
                f"round {x['number']}",
                x["fidelity"].get("value"),
                *((x["fidelity"].get("interval") or [None, None])[:2]),
            )
            for x in rounds
        ],
        "quality / teacher": [
            RoundPoint(
                f"round {x['number']}", x["quality"].get("value"), *((x["quality"].get("interval") or [None, None])[:2])
            )
            for x in rounds
        ],
    }
    chart = (
        rounds_chart(
            series,
            {"fidelity": thresholds.get("fidelity_min"), "quality / teacher": thresholds.get("quality_min_vs_teacher")},
            "Fidelity and quality per round, 95% intervals, against the locked thresholds",
        )
        if rounds
        else ""
    )
    return {
        "rounds": rounds,
        "chart": chart,
        "verdict": verdict,
        "check_names": [c["name"] for c in rounds[-1]["checks"]] if rounds else [],
        "gate_version": locked.version if locked else None,
        "interval_text": interval_text,
    }


# --- A run -----------------------------------------------------------------------------------------


def evaluated_runs(project: Any) -> list[str]:
    """Run ids with an evaluation in the ledger, newest first."""
    seen: list[str] = []
    for r in project.ledger.verified_rows("evaluations"):
        if r["variant"] == DECIDED_VARIANT and r["run_id"] not in seen:
            seen.append(r["run_id"])
    return seen


def _curve_charts(curve: Any) -> list[str]:
    """One chart per quantity (loss, learning rate, validation fidelity…), each with its own axis."""
    by_metric: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for name, (xs, ys) in _curve_series(curve).items():
        role, _, metric = name.rpartition(" ")
        if metric in ("epoch", "tokens", "seconds") or not xs:
            continue
        by_metric.setdefault(metric, {})[role or "student"] = (xs, ys)
    return [
        line_chart(series, f"Training: {metric.replace('_', ' ')}", metric.replace("_", " "))
        for metric, series in sorted(by_metric.items())
    ]


def _curation(project: Any, run: RunDir) -> dict[str, Any] | None:
    try:
        data = run.dataset()
    except DistilError:
        return None
    report = _read_json(data.folder / "report.json")
    if not isinstance(report, dict):
        return {"dataset_hash": data.dataset_hash, "counts": [], "removed": [], "filters": []}
    counts = report.get("counts") or {}
    removed_lists = report.get("removed") if isinstance(report.get("removed"), dict) else {}
    removed = []
    for key, value in counts.items():
        if key.startswith("removed_") and value:
            kind = key.removeprefix("removed_")
            examples = [e for e in removed_lists.get(kind, []) if isinstance(e, dict)][:5]
            removed.append({"kind": kind, "count": value, "examples": examples})
    for kind, spec in (report.get("filters") or {}).items():  # older reports: {"filter": {"removed": n, "why": "..."}}
        if isinstance(spec, dict) and "removed" in spec:
            removed.append({"kind": kind, "count": spec.get("removed"), "examples": [{"reason": spec.get("why", "")}]})
    filters = [(k, fmt(v)) for k, v in (report.get("filters") or {}).items() if not isinstance(v, dict)]
    return {
        "dataset_hash": data.dataset_hash,
        "counts": [(k, fmt(v)) for k, v in counts.items() if not k.startswith("removed_")],
        "removed": removed,
        "filters": filters,
        "test_split": report.get("test_split"),
    }


def run_view(project: Any, run_id: str) -> dict[str, Any]:
    """Per-slice fidelity of each model with intervals, calibration, latency, cost terms, training curves, curation."""
    run = RunDir(project, run_id)
    evaluation = _read_json(run.evaluation)
    if not isinstance(evaluation, dict):
        raise RunError(f"run {run.run_id}: no evaluation.json", hint=f"run `distil evaluate {run.run_id}`")
    slices = []
    for name, values in ((evaluation.get("student") or {}).get("slices") or {}).items():
        for value, row in values.items():
            cells = {}
            for model in MODELS:
                block = ((evaluation.get(model) or {}).get("slices") or {}).get(name, {}).get(value) or {}
                cells[model] = interval_text(block.get("agreement"), block.get("agreement_ci"))
            slices.append(
                {
                    "key": f"{name}={value}",
                    "n": row.get("n"),
                    "cells": cells,
                    "accuracy": interval_text(row.get("accuracy"), row.get("accuracy_ci")),
                }
            )
    models = []
    for model in MODELS:
        block = evaluation.get(model) or {}
        models.append(
            {
                "name": model,
                "agreement": interval_text(block.get("agreement"), block.get("agreement_ci")),
                # held-out accuracy only beside its count of hand-labelled items, as the report shows it
                "accuracy": held_out_accuracy(block),
                "kl": fmt(block.get("kl")),
                "ece": fmt(block.get("ece")),
                "p50_ms": fmt(block.get("p50_ms")),
                "p95_ms": fmt(block.get("p95_ms")),
                "params": fmt(block.get("params")),
                "size": fmt(block.get("size_bytes")),
            }
        )
    bins = {
        m: (evaluation.get(m) or {}).get("reliability") for m in MODELS if (evaluation.get(m) or {}).get("reliability")
    }
    cost = evaluation.get("cost") or {}
    cost_terms = [(k, fmt(v)) for k, v in cost.items() if not isinstance(v, (list, dict))]
    spec_cost = [
        (k, fmt(v)) for k, v in project.spec.cost.model_dump(mode="json").items() if not isinstance(v, (list, dict))
    ]
    checks = (evaluation.get("gate") or {}).get("checks") or []
    return {
        "run_id": run.run_id,
        "n_test": (evaluation.get("student") or {}).get("n"),
        "n_gold": ((evaluation.get("student") or {}).get("gold") or {}).get("n"),
        "models": models,
        "slices": slices,
        "reliability": reliability_chart(bins) if bins else "",
        "latency_checks": [c for c in checks if "latency" in c.get("name", "")],
        "checks": checks,
        "cost_terms": cost_terms,
        "spec_cost": spec_cost,
        "curves": _curve_charts(_read_json(run.curve)) if run.curve.is_file() else [],
        "curation": _curation(project, run),
        "interval_text": interval_text,
        "decisions": [d for d in _decisions(project) if d["run_id"] == run.run_id],
    }


# --- Disagreements ---------------------------------------------------------------------------------


def _distribution(labels: Sequence[str], row: Mapping[str, Any]) -> list[tuple[str, float]]:
    values = row.get("distribution") or []
    return [(label, float(p)) for label, p in zip(labels, values, strict=False)]


def _answer(row: Mapping[str, Any]) -> str:
    return str(row.get("label") if row.get("label") is not None else row.get("text") or "")


def _slice_keys(tags: Mapping[str, Any] | None) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((tags or {}).items())]


def disagreements_view(project: Any, run_id: str, slice_key: str = "", query: str = "") -> dict[str, Any]:
    """Every test and gold item where student and teacher answer differently, and every gold item the teacher
    gets wrong; filtered to one slice (``tone=urgent``) and to inputs containing ``query`` when given."""
    run = RunDir(project, run_id)
    if not run.predictions.is_file():
        raise RunError(f"run {run.run_id}: no predictions.parquet", hint=f"run `distil evaluate {run.run_id}`")
    labels = project.spec.task.label_names
    rows = read_predictions(run.predictions)
    by_item: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        if row["split"] in DISAGREEMENT_SPLITS:
            by_item.setdefault((row["split"], row["item_id"]), {})[row["model"]] = row
    slices: Counter[str] = Counter()
    disagreements, teacher_wrong = [], []
    needle = query.strip().lower()
    for (split, item_id), models in by_item.items():
        teacher, student = models.get("teacher"), models.get("student")
        if teacher is None or student is None:
            continue
        keys = _slice_keys(teacher.get("tags"))
        slices.update(keys)
        if (slice_key and slice_key not in keys) or (needle and needle not in str(teacher.get("input", "")).lower()):
            continue
        item = {
            "split": split,
            "item_id": item_id,
            "input": teacher.get("input", ""),
            "tags": keys,
            "teacher": _answer(teacher),
            "student": _answer(student),
            "baseline": _answer(models["baseline"]) if "baseline" in models else "",
            "teacher_dist": _distribution(labels, teacher),
            "student_dist": _distribution(labels, student),
            "gold": teacher.get("gold_label"),
            "recorded": bool(teacher.get("recorded")),
        }
        if item["teacher"] != item["student"]:
            disagreements.append(item)
        if item["gold"] is not None and item["teacher"] != item["gold"]:
            teacher_wrong.append(item)
    return {
        "run_id": run.run_id,
        "disagreements": disagreements,
        "teacher_wrong": teacher_wrong,
        "slices": sorted(slices.items()),
        "slice": slice_key,
        "query": query,
        "n_items": sum(1 for models in by_item.values() if "teacher" in models and "student" in models),
    }


# --- Sign-off --------------------------------------------------------------------------------------


def signoff_view(project: Any, run_id: str | None = None) -> dict[str, Any]:
    """The run to decide on, what the locked gate's rules say about it, and every decision recorded so far."""
    runs = evaluated_runs(project)
    chosen = run_id if run_id in runs else (runs[0] if runs else None)
    preview, problem = None, ""
    locked = locked_gate(project)
    if chosen is not None:
        try:
            if locked is None:
                raise DistilError("the gate is not locked", hint="the sponsor locks it with `distil gate lock`")
            _, rounds = evaluation_rounds(project, chosen)
            preview = decide_outcome(
                locked.thresholds, rounds, iterations_used=len(project.ledger.events(kind="iteration"))
            )
        except DistilError as exc:
            problem = exc.message
    if locked is not None and not locked.matches(project.spec):
        problem = "the gate changed since it was locked: " + "; ".join(gate_changes(locked, project.spec))
    return {
        "runs": runs,
        "run_id": chosen,
        "preview": preview,
        "problem": problem,
        "validator": project.spec.roles.validator,
        "driver": project.spec.roles.driver,
        "signed_acts": bool(project.spec.roles.keys),
        "decisions": _decisions(project),
    }


# --- After launch ----------------------------------------------------------------------------------


def after_launch_view(project: Any) -> dict[str, Any]:
    """Traffic volume per day and per route, the escalation share, and the newest monitor report with its alerts."""
    traffic = read_traffic(traffic_dir(project.state_dir))
    per_day: Counter[str] = Counter(str(r["timestamp"])[:10] for r in traffic)
    routes: Counter[str] = Counter(str(r.get("route") or "student") for r in traffic)
    escalated = routes.get("teacher", 0) / len(traffic) if traffic else None
    alerts = []
    for row in project.ledger.verified_rows("alerts"):
        event = project.ledger.event(row["event_seq"])
        alerts.append({"source": row["source"], "message": row["message"], "when": event.ts[:19] if event else ""})
    return {
        "n_traffic": len(traffic),
        "per_day": sorted(per_day.items()),
        "routes": sorted(routes.items()),
        "escalated": escalated,
        "monitor": monitor_section(project),
        "alerts": alerts,
    }
