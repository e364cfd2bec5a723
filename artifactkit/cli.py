"""The `artifactkit` command line. This module only builds the click group and turns
usage errors into one `error:` line and an exit code; every subcommand lives in its
own module under `artifactkit/commands/` and is discovered here. What the commands
share (the error contract, JSON, notices) is `artifactkit.commands._framework`."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from artifactkit import __version__
from artifactkit.commands._framework import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, CliState
from artifactkit.commands._options import DEBUG_HELP

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


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
        except click.exceptions.Abort as exc:
            interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
            click.echo(f"error: {'interrupted' if interrupted else 'aborted'}; nothing was written", err=True)
            if standalone_mode:
                sys.exit(EXIT_INTERRUPTED if interrupted else EXIT_BAD_INPUT)
            raise
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else EXIT_OK)
        return result


@click.group(cls=ArtifactkitGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="artifactkit")
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
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
