"""The ``autoprune`` command line: parses, calls the library, prints.

Each command group lives in its own module exposing ``register(app)``. Domain errors
(:class:`autoprune.errors.UserError`) and usage errors print one line and exit with code 2; set
``AUTOPRUNE_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer

# typer >= 0.2x vendors click: its exceptions derive from typer.exceptions, not from click's.
try:
    from typer import _click as _typer_click
    from typer import exceptions as _typer_exceptions

    _EXIT = (click.exceptions.Exit, _typer_exceptions.Exit)
    _ABORT = (click.exceptions.Abort, _typer_exceptions.Abort)
    _CLICK_ERRORS = (click.ClickException, _typer_click.exceptions.ClickException)
except ImportError:  # pragma: no cover - a typer that uses click itself
    _EXIT, _ABORT, _CLICK_ERRORS = click.exceptions.Exit, click.exceptions.Abort, click.ClickException

from autoprune.errors import UserError

# Command modules, each with ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = ("autoprune.cli.search", "autoprune.cli.info", "autoprune.cli.hardware", "autoprune.cli.pruning", "autoprune.cli.report")

app = typer.Typer(
    name="autoprune",
    help="Hardware-aware pruning search: find the accuracy-vs-latency Pareto front of a network on a target device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def _debug() -> bool:
    return os.environ.get("AUTOPRUNE_DEBUG", "") not in ("", "0")


def _quiet_libraries() -> None:
    """Libraries' own chatter (Optuna's per-trial log, deprecation notes) would drown autoprune's progress."""
    import logging
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    if not _debug():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    _quiet_libraries()
    try:
        result = app(args=argv, standalone_mode=False)
        return int(result or 0)
    except UserError as err:
        if _debug():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except _EXIT as err:
        return err.exit_code
    except _ABORT:
        print("aborted", file=sys.stderr)
        return 130
    except _CLICK_ERRORS as err:  # bad option, missing argument, bad value
        if _debug():
            raise
        if type(err).__name__ == "NoArgsIsHelpError" and getattr(err, "ctx", None) is not None:
            print(err.ctx.get_help(), file=sys.stderr)
            return 2
        ctx = getattr(err, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        print(f"error: {err.format_message()}{hint}", file=sys.stderr)
        return 2


def run() -> None:
    sys.exit(main())
