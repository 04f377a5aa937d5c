"""Screenshots of every page of `distil review` on a tiny finished project, written to docs/review/*.png.

Builds the triage example in a temporary folder with its gate locked, one evaluated run (the test suite's
numpy stand-ins for teacher, student and baseline), some logged traffic and one recorded decision; serves
the app on 127.0.0.1 and has the system Chromium (through Playwright, nothing downloaded) save each page
at 1280 px wide.

Run: python benchmarks/review_screenshots.py [--out docs/review]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test suite's tiny-project builders

from distil.decide import record_decision  # noqa: E402
from tests.conftest import EXAMPLES  # noqa: E402
from tests.review.browser import AVAILABLE, SKIP_REASON, browser_page  # noqa: E402
from tests.review.conftest import finished_project, serving  # noqa: E402

PAGES = {
    "project": "/",
    "rounds": "/rounds",
    "run": "/runs/run-1",
    "disagreements": "/runs/run-1/disagreements?slice=tone%3Durgent",
    "signoff": "/signoff",
    "after_launch": "/after-launch",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "review")
    args = parser.parse_args()
    if not AVAILABLE:
        raise SystemExit(SKIP_REASON)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "triage"
        shutil.copytree(EXAMPLES / "triage", root)
        project = finished_project(root / "distil.yaml")
        record_decision(project, "quinn", "run-1", chosen="iterate", note="one more round on urgent tickets")
        args.out.mkdir(parents=True, exist_ok=True)
        with serving(root / "distil.yaml") as base, browser_page(1280, 900) as page:
            for name, path in PAGES.items():
                page.goto(base + path)
                wide = page.evaluate("document.documentElement.scrollWidth")
                target = args.out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: page width {wide} px")


if __name__ == "__main__":
    main()
