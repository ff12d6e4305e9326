"""Shared terminal output: progress bars for long work, the summary table every stage ends with, and
the capture that keeps other libraries' output (TensorFlow/absl banners, converter warnings, tqdm
bars) out of the terminal and in a log file in the stage's own directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

# Logs and pipes get 160 columns instead of rich's 80, so summary tables do not wrap every cell.
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)


LIBRARY_LOG = "libraries.log"  # third-party output of a stage, in that stage's directory
_state = {"verbose": os.environ.get("POCKETML_VERBOSE", "") not in ("", "0"), "capturing": False}


def set_verbose(verbose: bool) -> None:
    """Verbose: other libraries print live to the terminal instead of the stage's log file (`-v`)."""
    _state["verbose"] = verbose


@contextlib.contextmanager
def library_output(stage_dir: str | Path) -> Iterator[None]:
    """Everything written to file descriptors 1 and 2 — C++ logs, Python warnings, other libraries'
    prints and progress bars — goes to `stage_dir/libraries.log`; pocketml's own consoles keep the
    terminal. A no-op when verbose or already capturing (a stage called inside another keeps its
    caller's log). The output is collected in a temporary file and appended to the stage's log only
    once the stage directory exists, so a stage that rejects its input before writing creates nothing.
    """
    if _state["verbose"] or _state["capturing"]:
        yield
        return
    with tempfile.NamedTemporaryFile(prefix="pocketml-libraries-", suffix=".log") as log:
        try:
            with _descriptors_to(log.fileno()):
                yield
        finally:
            _keep_log(Path(log.name), Path(stage_dir))


def _keep_log(captured: Path, stage_dir: Path) -> None:
    if stage_dir.is_dir() and captured.stat().st_size:
        with open(stage_dir / LIBRARY_LOG, "ab") as out:
            out.write(captured.read_bytes())


@contextlib.contextmanager
def _descriptors_to(log_fd: int) -> Iterator[None]:
    """fd 1 and 2 point at `log_fd` inside the block; the consoles write to the saved terminal."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = (os.dup(1), os.dup(2))
    terminals = [_fd_stream(saved[0]), _fd_stream(saved[1])]
    consoles = [(console, terminals[0]), (err_console, terminals[1])]
    # Only a console writing to the real fd 1/2 must follow the terminal; under a test's sys-level
    # capture (no fileno) sys.stdout is not the descriptor being redirected.
    redirected = [(c, stream) for (c, stream), fd in zip(consoles, (1, 2), strict=True) if _writes_to_fd(c, fd)]
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for c, stream in redirected:
        c.file = stream
    _state["capturing"] = True
    try:
        yield
    finally:
        _state["capturing"] = False
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for c, _ in redirected:
            c.file = None  # back to sys.stdout / sys.stderr
        for stream in terminals:
            stream.close()
        for fd in saved:
            os.close(fd)


def _fd_stream(fd: int):
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


def _writes_to_fd(target: Console, fd: int) -> bool:
    stream = target.file
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def progress() -> Progress:
    """A progress bar on stderr; quiet when stderr is not a terminal (CI logs stay readable)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
        transient=False,
        # Rich would route sys.stdout/sys.stderr through the bar to the terminal, around the capture
        # of library_output: other libraries' warnings would reach an interactive terminal.
        redirect_stdout=False,
        redirect_stderr=False,
    )


def step_done(text: str) -> None:
    """One line for a finished long step (a file exported, an epoch trained) where no progress bar
    shows it: output redirected to a log or a CI console."""
    if not err_console.is_terminal:
        console.print(text, markup=False, highlight=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    out = Table(title=title, title_justify="left")
    for col in columns:
        out.add_column(col, overflow="fold")
    for row in rows:
        out.add_row(*(fmt(v) for v in row))
    return out


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    console.print(table(title, columns, rows))


def fmt(value: object) -> str:
    """Compact text for a table cell: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
