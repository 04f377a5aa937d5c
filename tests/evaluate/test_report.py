"""The report: written into the run folder, self-contained, and rendered by headless Chromium with its
plots loaded and the verdict table present."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from distil.decide import record_decision
from distil.evaluate.report import write_report
from distil.evaluate.run import evaluate_run

from .chromium import CHROMIUM, base_command, rendered_check
from .conftest import numpy_models

PLOTS = ("slices", "reliability", "latency", "curves", "cost")

# Appended to a copy of the report: after load, writes each image's state into the DOM that
# --dump-dom prints, so the test sees what the browser decoded rather than what the file claims.
RENDER_CHECK = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (img) {
    out.push(img.id + " " + (img.complete ? 1 : 0) + " " + img.naturalWidth + " " + img.naturalHeight);
  });
  var rows = document.querySelectorAll("#verdict tbody tr").length;
  var pre = document.createElement("pre");
  pre.id = "render-check";
  pre.textContent = out.join("\\n") + "\\nverdict-rows " + rows;
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture
def reported(run_project):
    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    record_decision(run_project, "quinn")
    html, md = write_report(run_project)
    return run_project, html, md


def test_report_files_are_self_contained_and_summarised(reported):
    project, html, md = reported
    assert html == project.runs_dir / "run-1" / "report.html" and md.name == "report.md"
    text = html.read_text()
    assert len(re.findall(r'<img class="plot" id="plot-(\w+)" alt="[^"]*" src="data:image/png;base64,', text)) == len(
        PLOTS
    )
    assert "http://" not in text and "https://" not in text.replace("https://huggingface.co", "")  # nothing fetched
    assert "Apache-2.0" in text and "min_confidence" in text  # provenance: licence, filters
    assert '<ul id="duties">' in text and "Section 4(a)" in text  # the duties the student inherits, from the registry
    summary = md.read_text()
    assert "Duties the student inherits" in summary and "Section 4(a)" in summary
    assert "**Decision: iterate**" in summary or "**Decision: kill**" in summary
    assert "| fidelity_min |" in summary and "| student |" in summary


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make test installs it with scripts/ensure-chromium.sh)"
)
def test_report_renders_in_headless_chromium(reported, tmp_path: Path):
    _, html, _ = reported
    page = tmp_path / "report-check.html"
    page.write_text(html.read_text().replace("</body>", RENDER_CHECK + "</body>"))
    lines, dom = rendered_check(page, tmp_path / "profile", "render-check")
    images = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("plot-")}
    assert set(images) == {f"plot-{p}" for p in PLOTS}
    for name, (complete, width, height) in images.items():
        assert complete == "1" and int(width) > 100 and int(height) > 100, name
    assert lines[-1] == "verdict-rows 7"  # every threshold of the triage gate
    assert 'id="verdict"' in dom and ">FAIL</td>" in dom  # the fixture's student misses the gate

    shot = tmp_path / "report.png"
    subprocess.run(
        [*base_command(tmp_path / "profile"), f"--screenshot={shot}", "--window-size=1200,2400", html.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_every_check_row_shows_value_interval_p_value_n_and_status(reported):
    project, html, md = reported
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in md.read_text().splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in ("fidelity_min", "beat_baseline")
    }
    value, interval, limit, p_value, n, status = rows["fidelity_min"]
    assert (
        interval.startswith("[0.") and n == "24" and status == "❌ FAIL" and p_value == "–"
    )  # a student that flips every fifth ticket
    assert rows["beat_baseline"][3] not in ("", "–") and rows["beat_baseline"][4] == "24"  # the paired test's p-value
    verdict = re.search(r'<table id="verdict">.*?</table>', html.read_text(), re.S).group(0)
    assert "<th>95% interval</th>" in verdict and "<th>p-value</th>" in verdict and "<th>n</th>" in verdict
    assert '<td class="fail">FAIL</td>' in verdict
    statuses = re.findall(r'<td class="(?:pass|fail|undecided)">([^<]*)</td>', verdict)
    assert statuses and set(statuses) <= {"pass", "FAIL", "undecided"}


def test_the_cost_section_shows_each_term_and_its_source(reported):
    _, html, md = reported
    terms = re.search(r'<table id="cost-terms">.*?</table>', html.read_text(), re.S).group(0)
    for source in ("measured on this machine", "spec: cost.machine_hour_price", "ledger", "spec: cost.build_cost"):
        assert source in terms
    assert "| student_throughput_per_s |" in md.read_text() and "| payback_months |" in md.read_text()


def test_an_undecided_check_is_shown_as_undecided_never_as_pass():
    from distil.evaluate.report import check_rows

    (row,) = check_rows(
        [
            {
                "name": "fidelity_min",
                "value": 1.0,
                "threshold": 0.95,
                "passed": False,
                "status": "undecided",
                "interval": [0.862, 1.0],
                "p_value": None,
                "n": 24,
                "detail": "student agreement with the teacher",
                "method": "Wilson",
            }
        ]
    )
    assert (row["status"], row["css"], row["interval"], row["n"], row["p_value"]) == (
        "undecided",
        "undecided",
        "[0.862, 1.000]",
        "24",
        "–",
    )
    assert row["detail"].endswith("(Wilson)")


def test_agreement_between_labelling_teachers_is_shown_per_slice(run_project):
    import json

    from distil.runs import RunDir

    evaluate_run(run_project, models=numpy_models(flip_student=5), threads=1)
    curation = RunDir(run_project, "run-1").dataset().folder / "report.json"
    report = json.loads(curation.read_text())
    report["teacher_agreement"] = {
        "age=new": {"n": 4, "top_label_agreement": 0.5, "mean_disagreement": 0.31},
        "all": {"n": 12, "top_label_agreement": 0.75, "mean_disagreement": 0.125},
    }
    curation.write_text(json.dumps(report))
    html, md = write_report(run_project)
    text = html.read_text()
    table = text[text.index('<table id="teacher-agreement">') :].split("</table>")[0]
    assert re.findall(r'<td class="text">([^<]+)</td>', table) == ["all", "age=new"]  # all first, then by name
    assert "0.750" in table and "0.310" in table
    assert "teacher_agreement" not in text  # not repeated among the filters
    assert "| all | 12 | 0.750 | 0.125 |" in md.read_text()
