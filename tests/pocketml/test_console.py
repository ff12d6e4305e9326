"""Quiet by default: other libraries' output goes to the stage's libraries.log, pocketml's own stays."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, sys, warnings
    from pathlib import Path
    from pocketml import console

    stage = Path(sys.argv[1])
    with console.library_output(stage):
        stage.mkdir()
        os.write(2, b"I0000 oneDNN custom operations are on\\n")  # what a C++ library writes to fd 2
        print("a library's print")
        warnings.warn("a converter warning")
        console.console.print("pocketml table")
    print("after the stage")
    with console.library_output(Path(sys.argv[2])):
        os.write(2, b"noise before the directory exists\\n")  # a stage that rejected its input
    """
)


def run(tmp_path, verbose: bool = False):
    env = dict(os.environ, POCKETML_VERBOSE="1" if verbose else "0")
    args = [sys.executable, "-c", SCRIPT, str(tmp_path / "stage"), str(tmp_path / "never")]
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, check=True)


def test_library_output_goes_to_the_stage_log_and_pocketml_output_to_the_terminal(tmp_path):
    done = run(tmp_path)
    assert done.stdout.splitlines() == ["pocketml table", "after the stage"]
    assert done.stderr == ""
    log = (tmp_path / "stage" / "libraries.log").read_text()
    assert "oneDNN custom operations" in log and "a library's print" in log and "a converter warning" in log
    assert not (tmp_path / "never").exists()  # nothing created for a stage that wrote nothing


def test_verbose_shows_everything_live_and_writes_no_log(tmp_path):
    done = run(tmp_path, verbose=True)
    assert "a library's print" in done.stdout and "oneDNN custom operations" in done.stderr
    assert not (tmp_path / "stage" / "libraries.log").exists()
