"""Domain exceptions. Library code raises these; the CLI turns them into one
`error:` line and an exit code (2 for bad input, 1 for a failed check)."""

from __future__ import annotations


class ArtifactkitError(Exception):
    """Base class. The message names the file or tensor, the cause and the fix."""

    exit_code = 2


class InputError(ArtifactkitError):
    """A file or option the user gave cannot be used (corrupt, foreign, truncated, ...)."""

    exit_code = 2


class CheckFailed(ArtifactkitError):
    """A check ran and failed: over budget, unclassified large tensor, roundtrip too damaged."""

    exit_code = 1


def describe(path: object, cause: str, fix: str) -> str:
    """The house style for error messages: `PATH: cause; fix`."""
    return f"{path}: {cause}; {fix}"
