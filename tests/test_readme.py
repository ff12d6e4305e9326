"""The README's Python example runs as written (with `model/` and `photos/` in the working directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_python_example_runs_and_prints_what_the_readme_shows(real_model_dir, photos_dir, tmp_path):
    (tmp_path / "model").symlink_to(real_model_dir)
    (tmp_path / "photos").symlink_to(photos_dir)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(README.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", python_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("tflite-fp32 passed agreement 1.000 (0 of 136 flipped)", "onnx-fp32 passed",
                 "{'android': ['model-", "('cat', 'coffee') [('cat', "):
        assert line in done.stdout, line
    assert (tmp_path / "bundles" / "android" / "bundle.json").is_file()
