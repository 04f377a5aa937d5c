"""Commands of the first steps and the audit: init, check, gate lock/show, ledger log/verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from distil.cli.app import (
    AsOpt,
    SpecOpt,
    _project,
    app,
    console,
    err_console,
    gate_app,
    identity,
    keys_app,
    ledger_app,
    licence_app,
)

# --- 0. start ----------------------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")] = Path("."),
    task: Annotated[
        str | None,
        typer.Option("--task", help="classify | generate: a commented spec for your own task (default classify)."),
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="Your labels, comma-separated, e.g. positive,negative,neutral.")
    ] = None,
    example: Annotated[
        str | None, typer.Option("--example", help="Copy a shipped example with its data instead, e.g. triage.")
    ] = None,
    play: Annotated[
        str | None,
        typer.Option("--play", help="cost | latency | stability | specialization: that play's gate is suggested."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing distil.yaml.")] = False,
) -> None:
    """Create a project: a commented distil.yaml for your own task (placeholders to fill in, no data), or a
    shipped example with its data.

    Example: distil init sentiment --task classify --labels positive,negative,neutral

    Example: distil init demo --example triage
    """
    from distil.spec.templates import init_project, parse_labels

    path = init_project(directory, example=example, play=play, force=force, task=task, labels=parse_labels(labels))
    console.print(f"wrote [bold]{path}[/bold]")
    if example:
        console.print(f"next: cd {directory} && distil check")
        return
    console.print(
        "next: replace every <fill in: ...> in it, set a gate threshold, add seeds.jsonl"
        + (" and gold.jsonl" if (task or "classify") == "classify" else "")
        + f", then: cd {directory} && distil check",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


# --- 1. qualify --------------------------------------------------------------------------------------


@app.command()
def check(spec: SpecOpt = None) -> None:
    """Validate the spec, read every data file it names (counts per label and slice, duplicates), qualify the
    play's trigger and refuse placeholders, an empty gate and unlicensed teachers.

    Example: distil check --spec demo/distil.yaml
    """
    from distil.errors import SpecError
    from distil.spec.check import check_project
    from distil.spec.gate import require_unchanged_gate

    project = _project(spec)
    s = project.spec
    locked = require_unchanged_gate(project, must_be_locked=False)
    qualification, problems = check_project(project)

    table = Table(title=f"{s.name} ({project.spec_path})", show_header=False)
    table.add_row(
        "task", f"{s.task.kind}" + (f": {', '.join(s.task.label_names)}" if s.task.kind == "classify" else "")
    )
    table.add_row("play", f"{s.play.kind}: {s.play.trigger or '(no trigger given)'}")
    table.add_row(
        "roles",
        f"sponsor {s.roles.sponsor}, driver {s.roles.driver}, validator {s.roles.validator}, operator "
        f"{s.roles.operator or '-'}",
    )
    student = s.student.describe()
    table.add_row(
        "student", student + (f", ≤ {s.student.size_max_params:,} params" if s.student.size_max_params else "")
    )
    table.add_row(
        "data",
        f"seeds {s.data.seeds}, gold {s.data.gold or '-'}, synthetic budget {s.data.synthetic_budget}, slices "
        f"{', '.join(x.name for x in s.data.slices) or '-'}",
    )
    table.add_row("gate", f"locked v{locked.version} by {locked.locked_by}" if locked else "not locked yet")
    console.print(table)

    from distil.licences.review import recorded_reviews, registry_entry, review_covers
    from distil.teachers.urls import public_source

    reviews = recorded_reviews(project)
    teachers = Table(title="teachers")
    for col in ("id", "source", "licence", "distillation", "registry proposes", "reviewed", "review recorded"):
        teachers.add_column(col, overflow="fold")  # a source or licence is never cut to "…" on a narrow terminal
    for t in s.teachers:
        lic = t.licence
        entry = registry_entry(lic)
        review = reviews.get(t.id)
        recorded = (
            ("signed" if review.signed else "unsigned")
            if review_covers(review, t)
            else ("outdated" if review else "no")
        )
        teachers.add_row(
            t.id,
            public_source(t.source),
            (lic.id or lic.name) if lic else "(missing)",
            lic.distillation_permitted if lic else "-",
            (
                f"{entry.distillation_permitted} ({entry.id}{', review required' if entry.review_required else ''})"
                if entry
                else "unknown licence"
                if lic
                else "-"
            ),
            f"{lic.reviewed_by} {lic.reviewed_at or ''}".strip() if lic and lic.reviewed_by else "no",
            recorded,
        )
    console.print(teachers)
    for t in s.teachers:
        entry = registry_entry(t.licence)
        if entry is None:
            continue
        for condition in entry.conditions:
            console.print(f"{t.id} ({entry.id}) condition: {condition}", markup=False, highlight=False, soft_wrap=True)
        for duty in entry.duties:
            console.print(
                f"{t.id} ({entry.id}) duty the student inherits: {duty.describe()}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    qual = Table(title=f"play: {qualification.play}", show_header=False)
    for name, value in qualification.figures:
        qual.add_row(name, value)
    for note in qualification.notes:
        qual.add_row("note", note)
    console.print(qual)
    if problems:
        for problem in problems:
            console.print(f"[red]to fix[/red]: {escape(problem)}", highlight=False, soft_wrap=True)
        raise SpecError(
            f"{len(problems)} thing(s) to fix before any data is collected; the first: {problems[0]}",
            hint="fix each `to fix` line above in distil.yaml (or add the file it names), then `distil check` again",
        )
    from distil.data.audit import audit_data_files

    audits = audit_data_files(project)  # every line of every data file; a bad one is a DataError naming it
    console.print(data_table(s, audits))
    for warning in (w for a in audits for w in a.warnings):
        console.print(f"[yellow]warning[/yellow]: {escape(warning)}", highlight=False, soft_wrap=True)
    console.print("[green]spec OK[/green]")


def data_table(s, audits) -> Table:  # noqa: ANN001 - a Spec and FileAudits, imported lazily
    """One row per data file: items, per label, per slice value, repeats."""
    table = Table(title="data files")
    for col in ("file", "items", *(["per label"] if s.task.kind == "classify" else []), "per slice", "repeats"):
        table.add_column(col, overflow="fold")
    for a in audits:
        labels = ", ".join(f"{k} {v}" for k, v in a.per_label.items())
        slices = "; ".join(
            f"{name}: " + ", ".join(f"{value} {n}" for value, n in values.items())
            for name, values in a.per_slice.items()
        )
        row = [f"{a.field} {a.path.name}", str(a.items), *([labels] if s.task.kind == "classify" else [])]
        table.add_row(*row, slices or "-", str(len(a.duplicates)))
    return table


# --- 2. lock the gate --------------------------------------------------------------------------------


@gate_app.command("lock")
def gate_lock(
    as_: AsOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why a new gate version replaces the locked one.")] = "",
    spec: SpecOpt = None,
) -> None:
    """Lock the spec's gate in the ledger (sponsor only). A changed gate needs --reason.

    Example: distil gate lock --as alice
    """
    from distil.spec.gate import lock_gate

    project = _project(spec)
    locked, new = lock_gate(project, identity(as_), reason)
    verb = "locked" if new else "already locked, unchanged:"
    signed = "signed" if locked.signed else "unsigned"
    console.print(f"gate {verb} version {locked.version} ({locked.sha256[:19]}…) by {locked.locked_by}, {signed}")


@gate_app.command("show")
def gate_show(spec: SpecOpt = None) -> None:
    """Print the locked gate's thresholds, who locked them and when.

    Example: distil gate show
    """
    from distil.errors import GateError
    from distil.spec.gate import gate_changes, locked_gate

    project = _project(spec)
    locked = locked_gate(project)
    if locked is None:
        raise GateError("gate: not locked yet", hint=f"run `distil gate lock --as {project.spec.roles.sponsor}`")
    signed = "signed" if locked.signed else "unsigned"
    table = Table(title=f"gate v{locked.version}, locked by {locked.locked_by} at {locked.locked_at} ({signed})")
    table.add_column("threshold")
    table.add_column("value")
    for key, value in sorted(locked.thresholds.items()):
        if value is not None:
            table.add_row(key, str(value))
    for key, value in sorted((locked.cost or {}).items()):
        table.add_row(f"cost.{key}", str(value))
    console.print(table)
    if locked.reason:
        console.print(f"reason: {locked.reason}")
    if locked.cost is None:
        console.print(
            "[yellow]this lock predates cost locking: the cost section is not covered; lock a new version to cover "
            "it[/yellow]"
        )
    changes = gate_changes(locked, project.spec)
    if changes:
        console.print(f"[yellow]the spec's gate differs from the locked one: {'; '.join(changes)}[/yellow]")


# --- audit -------------------------------------------------------------------------------------------


@ledger_app.command("log")
def ledger_log(
    kind: Annotated[str | None, typer.Option("--kind", help="Only events of this kind, e.g. gate.locked.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Most rows to show.")] = 50,
    spec: SpecOpt = None,
) -> None:
    """Print the ledger's events, newest first; acts of people say whether they are signed.

    Example: distil ledger log --kind gate.locked
    """
    import json

    from distil.ledger.keys import SIGNED_ACTS

    project = _project(spec)
    table = Table(title=f"ledger {project.ledger_path}")
    for col in ("#", "time", "kind", "actor", "signed", "details"):
        table.add_column(col, overflow="fold")
    hidden = {"files", "signature", "signed_head", "typed_row"}
    for e in project.ledger.events(kind=kind, newest_first=True, limit=limit):
        details = {k: v for k, v in e.payload.items() if k not in hidden}
        signature = e.payload.get("signature")
        signed = (
            f"signed {signature.get('key', '')[8:20]}…"
            if isinstance(signature, dict)
            else ("unsigned" if e.kind in SIGNED_ACTS else "")
        )
        table.add_row(str(e.seq), e.ts[:19], e.kind, e.actor or "-", signed, json.dumps(details, default=str)[:120])
    console.print(table)


def _parse_head(text: str) -> tuple[int, str]:
    from distil.errors import LedgerError

    seq, _, digest = text.partition(":")
    if not seq.isdigit() or not digest.startswith("sha256:"):
        raise LedgerError(f"--head: expected SEQ:sha256:HEX as `distil ledger head` prints it, got {text!r}")
    return int(seq), digest


@ledger_app.command("head")
def ledger_head(spec: SpecOpt = None) -> None:
    """Print the ledger's head as SEQ:HASH; keep it outside the project to detect rows deleted from the end.

    Example: distil ledger head > ~/distil-heads/my-project.txt
    """
    project = _project(spec)
    seq, digest = project.ledger.head()
    console.print(f"{seq}:{digest}", markup=False, highlight=False, soft_wrap=True)


@ledger_app.command("verify")
def ledger_verify(
    no_files: Annotated[
        bool, typer.Option("--no-files", help="Skip rechecking the content hashes of recorded files.")
    ] = False,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Report recorded files that are gone without failing.")
    ] = False,
    head: Annotated[
        str | None,
        typer.Option(
            "--head", help="A head printed earlier by `distil ledger head` (SEQ:HASH) the chain must still hold."
        ),
    ] = None,
    spec: SpecOpt = None,
) -> None:
    """Check the hash chain, every typed row against its event, signatures, heads and recorded files;
    exit 1 naming each broken row or file.

    Example: distil ledger verify --head 42:sha256:9f86d0...
    """
    project = _project(spec)
    result = project.ledger.verify(
        check_files=not no_files, allow_missing=allow_missing, head=_parse_head(head) if head else None
    )
    for gone in result.missing if allow_missing else ():
        console.print(f"[yellow]missing[/yellow]: recorded file {gone} is gone", highlight=False)
    if result.unsigned:
        console.print(
            f"[yellow]unsigned[/yellow]: {len(result.unsigned)} act(s) of people carry no signature (rows "
            f"{', '.join(map(str, result.unsigned))})"
        )
    if result.ok:
        console.print(f"[green]ledger OK[/green]: {result.checked} events, chain intact, {result.signed} signed act(s)")
        return
    for problem in result.problems[:20]:
        err_console.print(f"ledger BROKEN at {problem}", markup=False, highlight=False, soft_wrap=True)
    if len(result.problems) > 20:
        err_console.print(f"... and {len(result.problems) - 20} more", markup=False)
    raise typer.Exit(1)


# --- keys --------------------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(as_: AsOpt = None) -> None:
    """Make NAME's Ed25519 signing key: the private half stays in your config folder (mode 0600), the
    public half is printed for the spec's roles.keys.

    Example: distil keys init --as quinn
    """
    from distil.ledger.keys import create_key

    name = identity(as_)
    path, public = create_key(name)
    console.print(f"private key: {path} (keep it; never copy it into a project)", highlight=False, soft_wrap=True)
    console.print(
        f'public key for roles.keys in distil.yaml:\n  {name}: "{public}"',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@keys_app.command("show")
def keys_show(as_: AsOpt = None, spec: SpecOpt = None) -> None:
    """Print NAME's public key (from the private key on this machine).

    Example: distil keys show --as quinn
    """
    from distil.errors import SigningError
    from distil.ledger.keys import key_locations, load_private_key, public_key_text

    name = identity(as_)
    root = _project(spec).root if spec is not None else None
    found = load_private_key(name, root)
    if found is None:
        places = ", ".join(str(p) for p in key_locations(name, root))
        raise SigningError(
            f"--as {name}: no private key (looked in {places})", hint=f"make one with `distil keys init --as {name}`"
        )
    console.print(f'{name}: "{public_key_text(found[1])}"  ({found[0]})', markup=False, highlight=False, soft_wrap=True)


# --- licences ----------------------------------------------------------------------------------------


@licence_app.command("list")
def licence_list() -> None:
    """List the licences and terms distil's registry knows, with what each says about distillation.

    Example: distil licence list
    """
    from distil.licences import registry

    table = Table(title="licence registry")
    for col in ("id", "name", "outputs", "weights", "duties", "source", "review required"):
        table.add_column(col, overflow="fold")
    for e in registry().licences:
        table.add_row(
            e.id,
            e.name,
            e.outputs,
            e.weights,
            str(len(e.duties)),
            f"{e.source.url} ({e.source.version})",
            "yes" if e.review_required else "no",
        )
    console.print(table)


@licence_app.command("show")
def licence_show(
    licence_id: Annotated[str, typer.Argument(help="A registry id, e.g. llama-3.1, or a licence name.")],
) -> None:
    """Print one registry entry: its verdict, conditions, duties, the clause and the dated source.

    Example: distil licence show llama-3.1
    """
    from distil.errors import LicenceError
    from distil.licences import find_licence, known_ids

    entry = find_licence(licence_id) or find_licence(name=licence_id)
    if entry is None:
        raise LicenceError(
            f"licence {licence_id!r} is not in distil's registry", hint=f"known ids: {', '.join(known_ids())}"
        )
    lines = [
        f"{entry.name} ({entry.id})",
        f"training on outputs: {entry.outputs}; on weights: {entry.weights}",
        f"distillation_permitted proposed: {entry.distillation_permitted}",
        f"clause: {entry.clause}",
    ]
    lines += [f"condition: {c}" for c in entry.conditions]
    lines += [f"duty ({d.applies_when}): {d.describe()}" for d in entry.duties]
    lines += [f"source: {entry.source.url} ({entry.source.version}), read on {entry.source.read_on}"]
    lines += [f"notes: {entry.notes}"] if entry.notes else []
    lines += (
        ["review required: this reading is less certain; read the clause yourself"] if entry.review_required else []
    )
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@licence_app.command("review")
def licence_review(
    teacher: Annotated[str, typer.Argument(help="The teacher's id in the spec.")],
    as_: AsOpt = None,
    spec: SpecOpt = None,
) -> None:
    """Record that you (the teacher's teachers[].licence.reviewed_by) read its terms: a licence.reviewed act
    in the ledger, signed when the spec sets keys. A licence the registry does not know needs one.

    Example: distil licence review smollm2 --as maria
    """
    from distil.licences.review import review_licence

    event = review_licence(_project(spec), teacher, identity(as_))
    signed = "signed" if event.payload.get("signature") else "unsigned"
    console.print(f"licence review of {teacher} recorded by {event.actor} (ledger row {event.seq}, {signed})")
