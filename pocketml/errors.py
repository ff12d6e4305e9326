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


REASON_CHARS = 300  # a reason in a table cell, a manifest or a note is at most this long


def one_line(text: str, fallback: str = "", last: bool = False) -> str:
    """The first (or `last`) non-empty line of `text`, at most REASON_CHARS long; `fallback` when there is none."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = (lines[-1] if last else lines[0]) if lines else fallback
    return line[:REASON_CHARS]


def reason_of(exc: BaseException) -> str:
    """Why something failed, in one line: 'ValueError: first line of its message'. A PocketMLError's
    message is already written for the user and stands alone."""
    text = one_line(str(exc))
    if isinstance(exc, PocketMLError) and text:
        return text
    return f"{type(exc).__name__}: {text}"[:REASON_CHARS] if text else type(exc).__name__
