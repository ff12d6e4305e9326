"""On an interactive terminal too, other libraries' warnings and prints go to the stage's log, not
the terminal: a progress bar must not route them around the capture."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

CHILD = r"""
import sys, time, warnings
from pathlib import Path
from pocketml.console import console, library_output, progress, step_done
stage = Path(sys.argv[1])
stage.mkdir()
with library_output(stage):
    with progress() as bar:
        task = bar.add_task("export", total=2)
        warnings.warn("tf.lite.Interpreter is deprecated")
        print("a library's own print")
        bar.advance(task)
        step_done("exported tflite/model-fp32.tflite: passed")
        bar.advance(task)
    console.print("pocketml's own line")
"""


def run_on_a_terminal(tmp_path) -> str:
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "stage")], stdin=follower,
                            stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_warnings_stay_in_the_log_on_a_tty(tmp_path):
    shown = run_on_a_terminal(tmp_path)
    assert "pocketml's own line" in shown
    assert "deprecated" not in shown and "a library's own print" not in shown
    assert "exported tflite/model-fp32.tflite" not in shown  # the bar shows progress on a terminal
    log = (tmp_path / "stage" / "libraries.log").read_text()
    assert "tf.lite.Interpreter is deprecated" in log and "a library's own print" in log
