"""What every command module shares: the exit codes, the error contract (`guarded`:
domain and base-layer errors become one `error:` line and an exit code), JSON output
and notices. `cli.py` and the command modules both import this module, never each
other."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from artifactkit.errors import ArtifactkitError
from eval.evaluate import EvalError
from eval.runtime import SetupError
from eval.shards import ShardError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
# Errors of the base layer (`eval`): a bad shard, tokenizer, device or config file is bad input.
BASE_LAYER_ERRORS = (SetupError, ShardError, EvalError)


class CliState:
    """Options every subcommand shares (set on the group), and how the command ended."""

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug
        self.error_code: int | None = None  # set by `fail`


def fail(message: str, code: int, state: CliState) -> None:
    state.error_code = code
    if state.debug:
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
            fail(str(exc), exc.exit_code, state)
        except BASE_LAYER_ERRORS as exc:
            fail(str(exc), EXIT_BAD_INPUT, state)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            fail("interrupted; nothing was written", EXIT_INTERRUPTED, state)
        except MemoryError:
            fail("out of memory; try a smaller input or --max-tokens", EXIT_BAD_INPUT, state)
        except Exception as exc:  # noqa: BLE001 - last line of defence, never a traceback
            fail(
                f"unexpected {type(exc).__name__}: {exc}; rerun with --debug and report the traceback",
                EXIT_BAD_INPUT,
                state,
            )

    return wrapper


def emit_json(document: Any) -> None:
    """Exactly one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def note(message: str) -> None:
    """Notices and warnings go to stderr so `--json` stdout stays clean."""
    click.echo(message, err=True)


def note_at_end(message: str) -> None:
    """A notice shown when the command ends (after its output), unless it ends with a
    bad-input or interrupt error, whose one `error:` line then stays alone on stderr."""
    ctx = click.get_current_context()
    state = ctx.find_object(CliState)

    def show() -> None:
        if state is None or state.error_code in (None, EXIT_CHECK_FAILED):
            note(message)

    ctx.call_on_close(show)
