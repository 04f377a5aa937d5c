"""Write one benchmark's section into docs/benchmarks.md, leaving the other sections as they are.

Each section sits between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->`` and carries the machine,
the command and the date, so a figure is never separated from how it was measured.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nEvery figure below was written by a script in `benchmarks/`; rerun the command shown to "
    "reproduce it.\n"
)


def machine() -> str:
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        gpu, torch_version = "no GPU", "not installed"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}, torch "
        f"{torch_version}"
    )


def write_section(name: str, title: str, body: str, command: str | None = None, doc: Path = DOC) -> Path:
    """Write (or replace) section ``name`` of ``doc`` (default docs/benchmarks.md)."""
    command = command or "python " + " ".join(sys.argv)
    block = (
        f"<!-- begin:{name} -->\n## {title}\n\n"
        f"Machine: {machine()}. Date: {dt.date.today().isoformat()}. Command: `{command}`. "
        f"Load average when written (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())}.\n\n"
        f"{body.strip()}\n<!-- end:{name} -->\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else HEADER
    pattern = re.compile(rf"<!-- begin:{re.escape(name)} -->.*?<!-- end:{re.escape(name)} -->\n?", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(doc)
    return doc


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def sized_main(name: str, title: str, script: str, run, sizes, doc: str, argv: list[str] | None = None) -> dict:  # noqa: ANN001
    """The command line every sized benchmark shares: --size, --no-write; prints and writes its section."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size", choices=sorted(sizes), default="full")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/benchmarks.md alone.")
    args = parser.parse_args(argv)
    body, result = run(args.size)
    print(body)
    if not args.no_write:
        write_section(name, title, body, command=f"python benchmarks/{Path(script).name} --size {args.size}")
    return result
