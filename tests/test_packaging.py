"""distil as an installed package, not a source checkout: the wheel carries the examples, the templates, the review
app's static files and the licence registry, and `distil init --example triage` and `distil check` work from it.

The wheel is built from a copy of the source (nothing is written into the checkout) with the setuptools already
installed (no build isolation, no index: nothing is downloaded), and installed with --no-deps into a fresh venv
whose only view of the other packages is a .pth line naming this interpreter's site-packages, so `import distil`
there can only be the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Package data a user's first commands read (`distil init`, `distil report`, `distil review`, licence checks).
PACKAGE_DATA = (
    "examples/triage/distil.yaml",
    "examples/triage/seeds.jsonl",
    "examples/triage/gold.jsonl",
    "examples/summaries/distil.yaml",
    "evaluate/templates/report.html.j2",
    "review/templates/base.html",
    "review/static/review.css",
    "licences/registry.yaml",
)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _source_copy(target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("src", "examples"):
        shutil.copytree(ROOT / name, target / name, symlinks=True, ignore=ignore)
    return target


def _fresh_venv(folder: Path) -> Path:
    """A venv without pip whose site-packages sees this interpreter's packages through a .pth line (after its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(own, "main-venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def test_a_wheel_in_a_fresh_venv_inits_the_triage_example_and_checks_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_NO_INDEX"] = "1"  # nothing is downloaded
    source = _source_copy(tmp_path / "source")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", "dist", str(source)],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("distil-*.whl")
    python = _fresh_venv(tmp_path / "venv")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], tmp_path, env
    )

    installed = Path(_run([str(python), "-c", "import distil; print(distil.__file__)"], tmp_path, env).stdout.strip())
    assert (tmp_path / "venv").resolve() in installed.resolve().parents  # the wheel, not the source checkout
    for name in PACKAGE_DATA:
        assert (installed.parent / name).is_file(), f"the wheel lacks distil/{name}"

    distil = str(tmp_path / "venv" / "bin" / "distil")
    out = _run([distil, "init", "--example", "triage", "project"], tmp_path, env).stdout
    assert "distil.yaml" in out
    copied = tmp_path / "project"
    assert (copied / "seeds.jsonl").read_bytes() == (ROOT / "examples" / "triage" / "seeds.jsonl").read_bytes()
    checked = _run([distil, "check"], copied, env)
    assert "spec OK" in checked.stdout
