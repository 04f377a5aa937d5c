"""The Typer application and what every command shares: options, identity, consoles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from distil.errors import RoleError

app = typer.Typer(
    name="distil",
    help="Turn a large teacher model into a small student model you own: gate, data, train, evaluate, decide, "
    "maintain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
gate_app = typer.Typer(help="Lock and show the success gate.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read and verify the project's ledger.", no_args_is_help=True)
keys_app = typer.Typer(help="Make and show the signing keys people sign their acts with.", no_args_is_help=True)
licence_app = typer.Typer(help="The licence registry, and reviews of teachers' terms.", no_args_is_help=True)
app.add_typer(gate_app, name="gate")
app.add_typer(ledger_app, name="ledger")
app.add_typer(keys_app, name="keys")
app.add_typer(licence_app, name="licence")

console = Console()
err_console = Console(stderr=True)
_DEBUG = {"on": False}

SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", help="Path to distil.yaml (default ./distil.yaml); the project folder is its folder."),
]
# Every command that records who acted takes this one option; Typer reads $DISTIL_USER when it is not given.
AsOpt = Annotated[
    str | None,
    typer.Option("--as", envvar="DISTIL_USER", show_envvar=True, help="Who is acting (default: $DISTIL_USER)."),
]


def actor(name: str | None) -> str:
    """The acting person's name from ``--as`` / ``$DISTIL_USER``; "" when neither is given (the step's default)."""
    return (name or "").strip()


def identity(name: str | None) -> str:
    """The acting person's name, normalised as the spec's role names are. A name is only a claim: in a
    project whose spec sets keys, the acts of people also need that person's private key."""
    from distil.spec.names import person_name

    who = actor(name)
    if not who:
        raise RoleError("--as: no identity given", hint="pass --as NAME or set DISTIL_USER")
    try:
        return person_name(who, "--as")
    except ValueError as exc:
        raise RoleError(str(exc)) from None


def _project(spec: Path | None):
    from distil.spec.io import load_project

    return load_project(spec)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show full tracebacks on errors, and the libraries' own warnings, log lines and loading bars.",
        ),
    ] = False,
) -> None:
    """distil: a success gate locked first, the teacher as a data factory, a student you own."""
    from distil.console import quiet_third_party

    _DEBUG["on"] = debug
    quiet_third_party(debug)
