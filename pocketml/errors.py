"""The one error type users see: the CLI prints its message on one line and exits 2."""


class PocketMLError(Exception):
    """A problem with the user's input or environment (not a bug).

    The message must name what was wrong and what is accepted, in one line.
    """

    exit_code = 2


class ValidationFailed(PocketMLError):
    """Exported artifacts did not match the original within tolerance (exit 1 under --strict)."""

    exit_code = 1


class RuntimeUnavailable(PocketMLError):
    """No runtime on this machine can execute the artifact (e.g. Core ML off macOS): a skip, not a failure."""
