"""The console script's entry point. It imports nothing heavy itself, so a Ctrl-C while
torch and the command modules load is one `error:` line and exit 130, not a traceback."""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # the same code as artifactkit.commands._framework.EXIT_INTERRUPTED


def run() -> None:
    try:
        from artifactkit.cli import main
    except KeyboardInterrupt:
        print("error: interrupted while starting; nothing was written", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    main(prog_name="artifactkit")
