"""`pocketml bench exp --out bench` from the user's own folder (a relative export path) measures peak
memory like from the repository; a column that could not be measured is said on the terminal, not
only in results.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pocketml.benchmarks import report

from pocketml.app import cli
from tests.conftest import PROJECT_ROOT
from tests.export.export_helpers import tiny_model_dir

CLI = "import sys; from pocketml.app.cli import main; sys.exit(main())"


def test_relative_export_dir_from_another_folder_gets_peak_memory(tmp_path, photos_dir, capsys):
    argv = ["export", tiny_model_dir(tmp_path / "m"), "--out", tmp_path / "exp", "--formats", "tflite",
            "--precisions", "fp32", "--calibration", photos_dir]
    assert cli.main([str(a) for a in argv]) == 0
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", CLI, "bench", "exp", "--out", "bench", "--threads", "1",
                           "--min-time", "0.02"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["tflite-fp32"]["memory"]["peak_rss_mb"] > 0, rows["tflite-fp32"]["notes"]
    assert rows["keras"]["memory"]["peak_rss_mb"] > 0, rows["keras"]["notes"]
    assert "not measured" not in done.stdout
    assert "bench tflite-fp32: " in done.stdout  # one line per finished file: stdout is not a terminal

    rows["tflite-fp32"]["memory"] = None
    rows["tflite-fp32"]["notes"].append("peak memory not measured: memory probe exited 1: no such file")
    report.print_summary(results)
    assert "tflite-fp32: peak memory not measured: memory probe exited 1: no such file" in capsys.readouterr().out
