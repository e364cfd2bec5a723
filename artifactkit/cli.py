"""The `artifactkit` command line. This module only builds the click group and turns
domain exceptions into one `error:` line and an exit code; every subcommand lives in
its own module under `artifactkit/commands/` and is discovered here."""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from artifactkit import __version__
from artifactkit.errors import ArtifactkitError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class CliState:
    """Options every subcommand shares (set on the group)."""

    def __init__(self, debug: bool = False, quiet: bool = False) -> None:
        self.debug = debug
        self.quiet = quiet


def fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command body: domain errors -> `error:` + exit code; anything unexpected
    -> exit 2 with a one-line summary (full traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        state = ctx.find_object(CliState) or CliState()
        try:
            return func(*args, **kwargs)
        except ArtifactkitError as exc:
            fail(str(exc), exc.exit_code, state.debug)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            fail("interrupted; nothing was written", EXIT_BAD_INPUT, state.debug)
        except MemoryError:
            fail("out of memory; try a smaller input or --max-tokens", EXIT_BAD_INPUT, state.debug)
        except Exception as exc:  # noqa: BLE001 - last line of defence, never a traceback
            fail(
                f"unexpected {type(exc).__name__}: {exc}; rerun with --debug and report the traceback",
                EXIT_BAD_INPUT,
                state.debug,
            )

    return wrapper


def emit_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def note(message: str) -> None:
    """Notices and warnings go to stderr so `--json` stdout stays clean."""
    click.echo(message, err=True)


class ArtifactkitGroup(click.Group):
    """A click group whose usage errors (missing file, bad option value) are one
    `error:` line like every other error, instead of click's usage block."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as exc:  # bare `artifactkit` (or a bare group): show the help
            click.echo(exc.format_message())
            if standalone_mode:
                sys.exit(EXIT_OK)
            raise
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split()).rstrip(".")
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f"; see '{exc.ctx.command_path} --help'"
            click.echo(f"error: {message}{hint}", err=True)
            if standalone_mode:
                sys.exit(exc.exit_code)
            raise
        except click.exceptions.Abort:
            click.echo("error: aborted; nothing was written", err=True)
            if standalone_mode:
                sys.exit(EXIT_BAD_INPUT)
            raise
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else EXIT_OK)
        return result


@click.group(cls=ArtifactkitGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="artifactkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Quantize, pack, size and roundtrip-evaluate model checkpoints under a hard
    artifact budget (default 16,000,000 bytes = compressed model + counted code).

    Exit codes: 0 ok, 1 a check failed, 2 bad input or usage.
    """
    ctx.obj = CliState(debug=debug)


def _register_commands() -> None:
    import artifactkit.commands as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"artifactkit.commands.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            main.add_command(command)


_register_commands()
