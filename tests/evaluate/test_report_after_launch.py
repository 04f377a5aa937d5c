"""The report's after-launch sections: the distilled and the quantized student side by side, the
router, and the newest monitor report (its plot inlined). Each is built from real files of the
formats `distil export`, `distil serve` and `distil monitor` write, and is absent without them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest

from distil.evaluate.report import write_report
from distil.evaluate.run import evaluate_run
from distil.export import compare_variant
from distil.monitor.check import run_monitor
from distil.runs import RunDir
from distil.serve.router import calibrate_threshold
from distil.serve.runs import write_router_report
from distil.serve.traffic import traffic_dir, write_traffic_rows

from .chromium import CHROMIUM, rendered_check
from .conftest import NumpyPredictor, make_inputs, numpy_models
from .test_report import PLOTS

AFTER_LAUNCH_IDS = ('id="quantized"', 'id="router"', 'id="monitor"', 'id="plot-monitor"')


def hashed_embedding(texts):
    """A deterministic stand-in for MiniLM: character trigrams hashed into 32 dimensions, normalised. [n, 32]"""
    out = np.zeros((len(texts), 32))
    for i, text in enumerate(texts):
        for j in range(max(len(text) - 2, 1)):
            out[i, hashlib.sha256(text[j : j + 3].encode()).digest()[0] % 32] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def write_quantized_evaluation(run_dir: Path, texts: list[str]) -> dict:
    """``evaluation.quantized.json`` as `distil export --quantize int8` writes it, from numpy predictions."""
    teacher = NumpyPredictor(0).label_distribution(texts)
    distilled = NumpyPredictor(5).label_distribution(texts)
    quantized = NumpyPredictor(4).label_distribution(texts)  # int8 rounding flips a few more
    document = {
        "run_id": run_dir.name, "variant": "quantized", "quantization": "int8 dynamic (onnxruntime)", "split": "test",
        "n": len(texts),
        "distilled": {**compare_variant(distilled, teacher, distilled), "size_bytes": 540_000, "p50_ms": 1.9},
        "quantized": {**compare_variant(distilled, teacher, quantized), "size_bytes": 150_000, "p50_ms": 1.1},
        "model": f".distil/exports/{run_dir.name}/onnx/model.int8.onnx",
    }  # fmt: skip
    (run_dir / "evaluation.quantized.json").write_text(json.dumps(document, indent=2))
    return document


def write_router(project, run_dir: Path, texts: list[str]):
    """``router.json`` as `distil serve` writes it: a threshold calibrated on numpy predictions."""
    teacher = NumpyPredictor(0).label_distribution(texts)
    student = NumpyPredictor(3).label_distribution(texts)
    calibration = calibrate_threshold(student, teacher, 0.95)
    write_router_report(RunDir(project, run_dir.name), calibration, project.spec.cost)
    return json.loads((run_dir / "router.json").read_text())


def write_monitor_report(project, now: dt.datetime):
    """Traffic over two days with the student flipping some answers, checked by `run_monitor`."""
    texts = [text for text, _, _ in make_inputs(30, seed=3)]
    served = NumpyPredictor(3).label_distribution(texts)
    start = now - dt.timedelta(hours=40)
    rows = [
        {"timestamp": start + dt.timedelta(hours=i), "input": text, "route": "student" if p.max() > 0.5 else "teacher",
         "answer": "x", "distribution": p.tolist(), "confidence": float(p.max())}
        for i, (text, p) in enumerate(zip(texts, served, strict=True))
    ]  # fmt: skip
    for shard in traffic_dir(project.state_dir).glob("*.parquet"):  # only this check's traffic
        shard.unlink()
    write_traffic_rows(traffic_dir(project.state_dir), rows)
    return run_monitor(
        project, sample=30, teacher=NumpyPredictor(0).label_distribution, embed=hashed_embedding, now=now
    )


@pytest.fixture
def launched(run_project):
    """The tiny run evaluated, exported with int8, served (router calibrated) and monitored twice."""
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    run_dir = run_project.runs_dir / "run-1"
    texts = [text for text, _, _ in make_inputs(24)]
    quantized = write_quantized_evaluation(run_dir, texts)
    router = write_router(run_project, run_dir, texts)
    now = dt.datetime(2025, 3, 4, 12, tzinfo=dt.UTC)
    write_monitor_report(run_project, now - dt.timedelta(days=7))  # an older report the section must not pick
    result, monitor_path = write_monitor_report(run_project, now)
    html, md = write_report(run_project)
    return run_project, html, md, quantized, router, result, monitor_path


def _section(text: str, section_id: str) -> str:
    """The HTML from the section's heading up to the next h2."""
    start = text.index(f'<h2 id="{section_id}">')
    return text[start : text.index("<h2", start + 4)]


def test_quantized_section_shows_both_variants_side_by_side(launched):
    _, html, _, quantized, _, _, _ = launched
    section = _section(html.read_text(), "quantized")
    rows = re.findall(r"<tr><td>(distilled(?: \+ quantized)?)</td>(.*?)</tr>", section)
    assert [name for name, _ in rows] == ["distilled", "distilled + quantized"]
    for (_, cells), block in zip(rows, (quantized["distilled"], quantized["quantized"]), strict=True):
        values = re.findall(r"<td>([^<]*)</td>", cells)
        assert f"{block['agreement']:.3f}" in values and f"{block['kl']:.3f}" in values
        assert f"{block['size_bytes']:,}" in values and f"{block['p50_ms']:.3f}" in values
    assert "<th>accuracy</th>" not in section  # neither block measured it
    assert "3.600× smaller" in section and "int8 dynamic (onnxruntime)" in section


def test_router_section_shows_threshold_escalation_and_blended_cost(launched):
    _, html, _, _, router, _, _ = launched
    section = _section(html.read_text(), "router")
    assert f"<td>calibrated threshold</td><td>{router['threshold']:.3f}</td>" in section
    assert f"<td>escalated to the teacher</td><td>{100 * router['escalated_share']:.1f}%</td>" in section
    blended = router["student_per_1m"] + router["escalated_share"] * router["teacher_per_1m"]
    assert router["blended_cost_per_1m"] == pytest.approx(blended)
    assert f"{router['blended_cost_per_1m']:,.3f} USD" in section


def test_monitor_section_shows_the_newest_report_with_its_plot_inlined(launched):
    project, html, _, _, _, result, monitor_path = launched
    text = html.read_text()
    section = _section(text, "monitor")
    assert result.n_traffic == 30 and monitor_path.name in section and "monitor-20250304T120000.json" in section
    windows = re.findall(r"<tr><td>(\d{4}-[^<]+)</td><td>(\d+)</td>", _table(section, "monitor-windows"))
    assert [(start, int(n)) for start, n in windows] == [(w["start"], w["n"]) for w in result.windows] and len(
        windows
    ) >= 2
    slices = _table(section, "monitor-slices")
    for name, values in result.slices.items():
        for value, row in values.items():
            assert f"<tr><td>{name}={value}</td><td>{row['n']}</td>" in slices
    drift = _table(section, "monitor-drift")
    assert f"<td>{result.drift['p_value']:.3f}</td>" in drift and result.drift["n_reference"] > 0
    assert result.alerts and all(
        f"<li>{html_escape(a)}</li>" in section for a in result.alerts
    )  # the student flips every third ticket
    match = re.search(r'<img class="plot" id="plot-monitor" alt="[^"]*" src="data:image/png;base64,([^"]+)"', section)
    assert match and base64.b64decode(match.group(1)) == monitor_path.with_suffix(".png").read_bytes()
    assert "ticket 1:" not in section  # the checked traffic itself stays out of the shared report
    assert "http://" not in text


def test_markdown_summary_has_the_after_launch_facts(launched):
    _, _, md, quantized, router, result, monitor_path = launched
    summary = md.read_text()
    assert (
        f"**Quantized** (int8 dynamic (onnxruntime)): agreement {quantized['distilled']['agreement']:.3f} → "
        f"{quantized['quantized']['agreement']:.3f}" in summary
    )
    assert "size 540,000 → 150,000 bytes (3.600× smaller)" in summary
    assert (
        f"**Router**: threshold {router['threshold']:.3f}, {100 * router['escalated_share']:.1f}% escalated" in summary
    )
    assert f"blended cost {router['blended_cost_per_1m']:,.3f} USD per 1M requests" in summary
    assert f"**Monitor** (`.distil/monitor/{monitor_path.name}`): agreement {result.agreement:.3f}" in summary
    assert "MMD²" in summary and result.alerts[0] in summary


def test_after_launch_sections_are_absent_without_their_files(launched):
    project, html, md, _, _, _, _ = launched
    run_dir = project.runs_dir / "run-1"
    (run_dir / "evaluation.quantized.json").unlink()
    (run_dir / "router.json").unlink()
    for f in (project.state_dir / "monitor").iterdir():
        f.unlink()
    html, md = write_report(project)
    text, summary = html.read_text(), md.read_text()
    assert not any(marker in text for marker in AFTER_LAUNCH_IDS)
    assert not any(word in summary for word in ("**Quantized**", "**Router**", "**Monitor**"))


def test_monitor_report_without_plot_and_broken_files_do_not_break_the_report(launched):
    project, _, _, _, _, _, monitor_path = launched
    monitor_path.with_suffix(".png").unlink()
    (project.runs_dir / "run-1" / "router.json").write_text("{not json")
    html, _ = write_report(project)
    text = html.read_text()
    assert 'id="monitor"' in text and 'id="plot-monitor"' not in text and "The monitor report has no plot." in text
    assert 'id="router"' not in text and 'id="quantized"' in text


def _table(html: str, table_id: str) -> str:
    start = html.index(f'id="{table_id}"')
    return html[start : html.index("</table>", start)]


# After load: every image's decoded size, and whether anything is wider than the window.
LAYOUT_CHECK = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (img) {
    out.push(img.id + " " + (img.complete ? 1 : 0) + " " + img.naturalWidth + " " + img.naturalHeight);
  });
  var page = document.documentElement;
  out.push("viewport " + page.clientWidth + " page " + page.scrollWidth);
  var pre = document.createElement("pre");
  pre.id = "layout-check";
  pre.textContent = out.join("\\n");
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it with scripts/ensure-chromium.sh)"
)
def test_after_launch_report_renders_at_1100px_without_page_overflow(launched, tmp_path: Path):
    _, html, _, _, _, _, _ = launched
    page = tmp_path / "layout-check.html"
    page.write_text(html.read_text().replace("</body>", LAYOUT_CHECK + "</body>"))
    lines, _ = rendered_check(
        page, tmp_path / "profile", "layout-check", "--hide-scrollbars", "--window-size=1100,2400"
    )
    images = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("plot-")}
    assert set(images) == {f"plot-{p}" for p in (*PLOTS, "monitor")}
    for name, (complete, width, height) in images.items():
        assert complete == "1" and int(width) > 100 and int(height) > 100, name
    _, viewport, _, page_width = next(line for line in lines if line.startswith("viewport")).split()
    assert int(viewport) <= 1100 and int(page_width) <= int(viewport)  # nothing pushes the page sideways
