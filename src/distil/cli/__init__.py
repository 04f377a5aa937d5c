"""The `distil` command line: parse, call one library function, print.

Library errors are :class:`~distil.errors.DistilError`; :func:`main` prints them as one line and a
hint on stderr and exits 2 (a traceback only with ``--debug``). Each stage's commands live in their
own module below and register themselves on the one Typer ``app``.
"""

from __future__ import annotations

import typer

try:  # typer carries its own copy of click from 0.26 on; its usage errors are not click's
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - an older typer on the real click
    from click.exceptions import ClickException, NoArgsIsHelpError

# Importing a stage's module registers its commands on ``app``; the order is the order of `distil --help`.
import distil.cli.cadence
import distil.cli.data
import distil.cli.evaluate
import distil.cli.project
import distil.cli.review
import distil.cli.serve
import distil.cli.stack
import distil.cli.train  # noqa: F401
from distil.cli.app import _DEBUG, app, err_console
from distil.errors import DistilError

_CLICK_ERRORS: tuple[type[Exception], ...] = (ClickException,)

# --- entry point -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    try:
        code = app(args=argv, prog_name="distil", standalone_mode=False)  # hints read `distil ...`, however started
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
    except _CLICK_ERRORS as exc:  # an unknown option, a missing value, a value of the wrong type
        return _usage_error(exc)
    return code if isinstance(code, int) else 0


def _usage_error(exc: Exception) -> int:
    """A usage mistake as a DistilError is shown: one ``error:`` line and a hint naming the command's help."""
    if isinstance(exc, NoArgsIsHelpError):  # `distil gate`: the group's help is the answer
        exc.show()
        return 2
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "distil"
    message = " ".join(exc.format_message().split())
    if len(message) > 200:  # click echoes what it could not parse, which may be any length
        message = message[:199] + "…"
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"hint: run `{command} --help` for its options", markup=False, highlight=False, soft_wrap=True)
    return 2
