"""Headless Chromium for the report tests: render a page, run its inline checks, return the DOM."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps dialling out on a closed network.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


def base_command(profile: Path, *extra: str) -> list[str]:
    return [CHROMIUM, *FLAGS, *extra, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]


def rendered_check(page: Path, profile: Path, check_id: str, *extra: str) -> tuple[list[str], str]:
    """(lines the page's inline check script wrote into ``<pre id=check_id>``, the rendered DOM)."""
    command = [*base_command(profile, *extra), "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(rf'<pre id="{check_id}">(.*?)</pre>', result.stdout, re.S)
    assert match, f"the {check_id} did not run: " + result.stdout[-500:]
    return match.group(1).strip().splitlines(), result.stdout
