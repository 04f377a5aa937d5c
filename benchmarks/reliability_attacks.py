"""Attack a tiny signed project every way the paper trail is meant to catch, and write what happened into
docs/reliability.md (section ``attacks``): the attack, the command or step that met it, and the outcome as
observed — the exit code and the first line of the message, or NOT caught.

The project: the triage example with keys for its four people, a tiny random teacher and student built from
configs (no real teacher), its gate locked, a curated dataset and a run recorded with their files, an
evaluation and a signed decision. Each attack works on its own copy (project and the people's config folder,
where keys and kept heads live), so one attack never shows in another's outcome.

Usage: .venv/bin/python benchmarks/reliability_attacks.py [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
DOC = ROOT / "docs" / "reliability.md"
SECRET = "s3cret-pass"


# --- the project under attack ------------------------------------------------------------------------


def use_home(base: Path) -> None:
    """Point the config folder (keys, kept heads), home and caches at ``base``."""
    os.environ.update(
        {
            "HOME": str(base / "home"),
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_CACHE_HOME": str(base / "cache"),
            "DISTIL_CACHE": str(base / "cache" / "distil"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    os.environ.pop("DISTIL_USER", None)


def build_base(base: Path) -> None:
    import numpy as np
    import yaml

    from distil.decide import record_decision
    from distil.spec.gate import lock_gate
    from distil.spec.io import load_project
    from tests.conftest import EXAMPLES, build_tiny_causal_lm
    from tests.ledger.conftest import record_evaluation, with_keys
    from tests.serve.conftest import write_classify_run, write_curated

    use_home(base)
    teacher = build_tiny_causal_lm(base / "teacher", layers=2, hidden=32)
    root = base / "project"
    shutil.copytree(EXAMPLES / "triage", root)
    spec = yaml.safe_load((root / "distil.yaml").read_text())
    spec["teachers"][0]["source"] = f"hf:{teacher}"
    (root / "distil.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with_keys(root / "distil.yaml", ["maria", "dev", "quinn", "ops"])
    project = load_project(root / "distil.yaml")
    lock_gate(project, "maria")
    write_classify_run(project.runs_dir / "r1")
    texts = [f"ticket {i}: my invoice is wrong" for i in range(12)]
    write_curated(project, texts, np.random.default_rng(0).dirichlet(np.ones(3), size=len(texts)))
    record_evaluation(project, "r1")
    record_decision(project, "quinn", "r1")
    if not project.ledger.verify().ok:
        raise SystemExit(f"the base project does not verify: {project.ledger.verify().problems}")


class Target:
    """One attack's own copy of the base project."""

    def __init__(self, base: Path, folder: Path):
        shutil.copytree(base, folder, symlinks=True)
        use_home(folder)
        self.folder = folder
        self.root = folder / "project"
        self.spec = self.root / "distil.yaml"
        self.db = self.root / ".distil" / "ledger.db"

    def sql(self, statement: str, args: tuple = ()) -> None:
        with sqlite3.connect(self.db) as conn:
            conn.execute(statement, args)

    def one(self, statement: str, args: tuple = ()):
        with sqlite3.connect(self.db) as conn:
            return conn.execute(statement, args).fetchone()

    def seq(self, kind: str) -> int:
        return self.one("SELECT max(seq) FROM events WHERE kind = ?", (kind,))[0]

    def project(self):
        from distil.spec.io import load_project

        return load_project(self.spec)

    def distil(self, *args: str) -> tuple[str, int, str]:
        """Run a `distil` command in this process: (the command as typed, exit code, everything it printed)."""
        from distil.cli import main
        from distil.cli.app import console, err_console

        out, err = io.StringIO(), io.StringIO()
        console.width = err_console.width = 200  # tables as on a wide terminal: a cell is not folded over lines
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--spec", str(self.spec)])
        return "distil " + " ".join(args), code, err.getvalue() + out.getvalue()


# --- outcomes ----------------------------------------------------------------------------------------


def first_line(text: str) -> str:
    """The first line that says what went wrong (progress bars and tables left out)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("error:", "ledger BROKEN")):
            return line
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def refused(result: tuple[str, int, str]) -> tuple[str, str]:
    """(step, outcome) of a command that should fail: caught / refused with its message, or NOT caught."""
    command, code, text = result
    if code == 0:
        return command, "**NOT caught** (exit 0)"
    word = "caught" if code == 1 else "refused"
    return command, f"{word} (exit {code}): {first_line(text)}"


def raised(step: str, call: Callable[[], object]) -> tuple[str, str]:
    """(step, outcome) of a library step that should raise a DistilError."""
    from distil.errors import DistilError

    try:
        call()
    except DistilError as exc:
        return step, f"refused ({type(exc).__name__}): {str(exc.message).splitlines()[0]}"
    return step, "**NOT caught** (no error)"


def cell(text: str, limit: int = 230) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the attacks -------------------------------------------------------------------------------------


def edit_payload(t: Target) -> list[tuple[str, str]]:
    seq = t.seq("decision")
    before = t.one("SELECT payload FROM events WHERE seq = ?", (seq,))[0]
    t.sql("UPDATE events SET payload = replace(payload, '\"iterate\"', '\"ship\"') WHERE seq = ?", (seq,))
    if t.one("SELECT payload FROM events WHERE seq = ?", (seq,))[0] == before:
        raise SystemExit("the base decision is not iterate: nothing was edited")
    return [refused(t.distil("ledger", "verify"))]


def edit_typed_row(t: Target) -> list[tuple[str, str]]:
    t.sql("UPDATE gates SET canonical = replace(canonical, '0.9', '0.1')")
    return [refused(t.distil("ledger", "verify")), refused(t.distil("gate", "show"))]


def forged_decision(event_seq: Callable[[Target], int]) -> Callable[[Target], list[tuple[str, str]]]:
    def attack(t: Target) -> list[tuple[str, str]]:
        seq = event_seq(t)
        t.sql(
            "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (?, 'r1', "
            "'ship', 'quinn', 'dev', ?)",
            (seq, t.seq("evaluation")),
        )
        return [refused(t.distil("ledger", "verify")), refused(t.distil("serve", "--as", "ops"))]

    return attack


def forged_gate_v2(t: Target) -> list[tuple[str, str]]:
    t.sql(
        "INSERT INTO gates (event_seq, version, sha256, canonical, locked_by, reason) VALUES (9999, 2, 'sha256:x', "
        "?, 'maria', 'lower')",
        (json.dumps({"gate": {"fidelity_min": 0.1}}),),
    )
    return [
        refused(t.distil("ledger", "verify")),
        refused(t.distil("gate", "show")),
        refused(t.distil("decide", "--as", "quinn")),
    ]


def delete_middle_row(t: Target) -> list[tuple[str, str]]:
    seq = t.seq("evaluation")
    t.sql("DELETE FROM evaluations WHERE event_seq = ?", (seq,))
    t.sql("DELETE FROM events WHERE seq = ?", (seq,))
    return [refused(t.distil("ledger", "verify"))]


def delete_last_rows(t: Target) -> list[tuple[str, str]]:
    _, _, printed = t.distil("ledger", "head")
    kept = printed.strip()
    seq = t.seq("decision")
    for table in ("decisions", "evaluations"):
        t.sql(f"DELETE FROM {table} WHERE event_seq >= ?", (seq - 1,))
    t.sql("DELETE FROM events WHERE seq >= ?", (seq - 1,))
    signer_kept = refused(t.distil("ledger", "verify"))
    shutil.rmtree(t.folder / "config" / "distil" / "heads")  # the validator's own kept head gone too
    neither = refused(t.distil("ledger", "verify"))
    step, outcome = refused(t.distil("ledger", "verify", "--head", kept))
    return [
        (signer_kept[0] + " (the validator's kept head)", signer_kept[1]),
        (neither[0] + " (no head kept anywhere: the known limit)", neither[1]),
        (step.replace(kept, "SEQ:HASH") + " (a head kept elsewhere)", outcome),
    ]


def appended_event(t: Target) -> list[tuple[str, str]]:
    from tests.ledger.conftest import forge_event, typed_row_hash

    seq = t.one("SELECT max(seq) FROM events")[0] + 1
    row = ("r1", "ship", "quinn", "dev", t.seq("evaluation"))
    t.sql(
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (?, ?, ?, ?, "
        "?, ?)",
        (seq, *row),
    )
    payload = {
        "run_id": "r1",
        "decision": "ship",
        "typed_row": {"table": "decisions", "sha256": typed_row_hash(t.db, "decisions", seq)},
    }
    forge_event(t.db, "decision", "quinn", payload)
    return [refused(t.distil("ledger", "verify")), refused(t.distil("serve", "r1", "--as", "ops"))]


def delete_recorded_file(t: Target) -> list[tuple[str, str]]:
    shard = next((t.root / ".distil" / "data" / "curated").glob("*/validation.parquet"))
    shard.unlink()
    return [refused(t.distil("ledger", "verify")), refused(t.distil("evaluate", "r1"))]


def change_shard(t: Target) -> list[tuple[str, str]]:
    shard = next((t.root / ".distil" / "data" / "curated").glob("*/test.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    return [refused(t.distil("ledger", "verify")), refused(t.distil("evaluate", "r1"))]


def change_model(t: Target) -> list[tuple[str, str]]:
    weights = t.root / ".distil" / "runs" / "r1" / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    return [
        refused(t.distil("ledger", "verify")),
        refused(t.distil("serve", "r1", "--as", "ops", "--allow-unshipped")),
        refused(t.distil("export", "r1", "--format", "safetensors")),
    ]


def forged_ship_then_serve(t: Target) -> list[tuple[str, str]]:
    t.sql(
        "INSERT INTO decisions (event_seq, run_id, decision, validator, driver, evaluation_seq) VALUES (9999, 'r1', "
        "'ship', 'quinn', 'dev', 1)"
    )
    return [refused(t.distil("serve", "r1", "--as", "ops"))]


class _Marker:
    """Unpickling this creates a file: if the marker exists afterwards, code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def crafted_checkpoint(t: Target) -> list[tuple[str, str]]:
    import torch

    from distil.runs import RunDir
    from distil.train.artefacts import read_checkpoint_state

    state = RunDir.new(t.project(), "r1").checkpoints("student") / "state.pt"
    state.parent.mkdir(parents=True)
    marker = t.folder / "code-ran"
    torch.save({"model": {}, "payload": _Marker(marker)}, state)
    step, outcome = raised(
        "read_checkpoint_state(state.pt), the first read of `distil train --resume r1`",
        lambda: read_checkpoint_state(state),
    )
    return [(step, outcome + ("; **code ran**" if marker.exists() else "; no code ran"))]


def dotdot_run_id(t: Target) -> list[tuple[str, str]]:
    return [
        refused(t.distil("serve", "../x", "--as", "ops", "--allow-unshipped")),
        refused(t.distil("evaluate", "../x")),
        refused(t.distil("train", "--resume", "../x")),
    ]


def url_with_credentials(t: Target) -> list[tuple[str, str]]:
    t.spec.write_text(
        t.spec.read_text().replace(
            "source: hf:", f"source: openai:http://user:{SECRET}@127.0.0.1:9/v1#m\n    # was hf:"
        )
    )
    command, code, text = t.distil("check")
    leaked = [
        str(p.relative_to(t.root))
        for p in t.root.rglob("*")
        if p.is_file() and p != t.spec and SECRET.encode() in p.read_bytes()
    ]
    if SECRET in text or leaked:
        return [
            (
                command,
                "**NOT caught**: the password was "
                f"{'printed' if SECRET in text else 'written to ' + ', '.join(leaked)}",
            )
        ]
    if code == 2:
        return [
            refused((command, code, text))[:1]
            + (refused((command, code, text))[1] + "; the password is in no output and no file",)
        ]
    shown = re.search(r"openai:[^\s│]*\*\*\*@[^\s│]*", text)
    if shown is None:
        return [(command, f"**NOT caught**: the URL is not shown with its password masked (exit {code})")]
    return [(command, f"stripped (exit {code}): shown as {shown.group(0)}; the password is in no output and no file")]


def spec_edit(old: str, new: str) -> Callable[[Target], list[tuple[str, str]]]:
    def attack(t: Target) -> list[tuple[str, str]]:
        text = t.spec.read_text()
        if old not in text:
            raise SystemExit(f"the spec has no {old!r} to replace")
        t.spec.write_text(text.replace(old, new, 1))
        return [refused(t.distil("check"))]

    return attack


def duplicate_key(t: Target) -> list[tuple[str, str]]:
    t.spec.write_text(t.spec.read_text().replace("  validator: quinn\n", "  validator: quinn\n  validator: dev\n", 1))
    return [refused(t.distil("check"))]


ATTACKS: list[tuple[str, Callable[[Target], list[tuple[str, str]]]]] = [
    ("edit an event's payload (the decision iterate → ship)", edit_payload),
    ("edit a typed row (the gate's thresholds)", edit_typed_row),
    ("forged ship decision under an existing event's seq", forged_decision(lambda t: t.seq("evaluation"))),
    ("forged ship decision under seq 9999 (no event)", forged_decision(lambda t: 9999)),
    ("forged gate version 2 (lower thresholds)", forged_gate_v2),
    ("delete a middle row (the evaluation)", delete_middle_row),
    ("delete the last rows (evaluation, decision)", delete_last_rows),
    ("append a ship decision with recomputed hashes (signed project)", appended_event),
    ("delete a recorded file (a curated split)", delete_recorded_file),
    ("change one byte of a curated shard", change_shard),
    ("change one bit of the student's model.safetensors", change_model),
    ("forged ship decision, then serve", forged_ship_then_serve),
    ("crafted checkpoint with a pickled callable", crafted_checkpoint),
    ("run id `../x`", dotdot_run_id),
    ("teacher URL with credentials", url_with_credentials),
    (
        "`.inf` price (cost.teacher_per_1m_requests)",
        spec_edit("teacher_per_1m_requests:", "teacher_per_1m_requests: .inf #"),
    ),
    ("role name with a zero-width space", spec_edit("validator: quinn", "validator: qu\u200binn")),
    ("duplicate YAML key (roles.validator twice)", duplicate_key),
]


def run_attacks() -> tuple[list[list[str]], float]:
    started = time.perf_counter()
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="distil-attacks-") as tmp:
        base = Path(tmp) / "base"
        build_base(base)
        for number, (attack, perform) in enumerate(ATTACKS, start=1):
            target = Target(base, Path(tmp) / f"attack-{number}")
            for step, outcome in perform(target):
                shown = outcome.replace(str(target.root) + "/", "").replace(
                    str(target.folder) + "/", ""
                )  # the temporary folder
                rows.append([attack, f"`{step}`" if step.startswith("distil ") else step, cell(shown)])
                attack = "〃"
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/reliability.md alone.")
    args = parser.parse_args()
    from benchmarks._report import markdown_table, write_section

    rows, seconds = run_attacks()
    missed = sum("NOT caught" in r[2] for r in rows)
    body = (
        f"{len(ATTACKS)} attacks, {len(rows)} steps, {missed} not caught; {seconds:.0f} s in all. Each row is what the "
        "step printed (its first line), not what it is expected to print.\n\n"
        + markdown_table(["attack", "command / step", "outcome"], rows)
    )
    print(body)
    if not args.no_write:
        write_section(
            "attacks", "Attacks on the paper trail", body, command="python benchmarks/reliability_attacks.py", doc=DOC
        )


if __name__ == "__main__":
    main()
