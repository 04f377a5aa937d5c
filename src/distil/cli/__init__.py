"""The `distil` command line: parse, call one library function, print.

Library errors are :class:`~distil.errors.DistilError`; :func:`main` prints them as one line and a
hint on stderr and exits 2 (a traceback only with ``--debug``). Each stage's commands live in their
own module below and register themselves on the one Typer ``app``.
"""

from __future__ import annotations

import typer

# Importing a stage's module registers its commands on ``app``; the order is the order of `distil --help`.
from distil.cli import cadence, data, evaluate, project, serve, train  # noqa: F401
from distil.cli.app import _DEBUG, app, err_console
from distil.errors import DistilError

# --- entry point -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, standalone_mode=False)
    except DistilError as exc:
        if _DEBUG["on"]:
            raise
        err_console.print(f"error: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        err_console.print(f"hint: {exc.hint}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted; finished work is kept, rerun the command to continue")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2
        raise
    return code if isinstance(code, int) else 0
