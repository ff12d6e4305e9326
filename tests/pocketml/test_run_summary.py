"""The end of `pocketml run`: the bench table once (not bench's own and then the closing summary's)."""

from __future__ import annotations

from pocketml.app import cli
from tests.export.export_helpers import tiny_model_dir

CONFIG = """
run_dir = "{run}"
[[acquire.sources]]
type = "folder"
path = "{photos}"
[export]
formats = ["tflite"]
precisions = ["fp32"]
[bench]
threads = [1]
min_time_s = 0.02
measure_memory = false
"""


def test_the_bench_table_is_printed_once(tmp_path, photos_dir, capsys):
    run = tmp_path / "run"
    assert cli.main(["export", str(tiny_model_dir(tmp_path / "m")), "--out", str(run / "export"), "--formats", "tflite",
                     "--precisions", "fp32", "--calibration", str(photos_dir)]) == 0
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG.format(run=run, photos=photos_dir))
    capsys.readouterr()
    assert cli.main(["run", str(config), "--from", "bench"]) == 0
    out = capsys.readouterr().out
    assert out.count("pocketml bench:") == 1
    assert out.index("pocketml bench:") > out.index("pocketml run →")  # in the closing summary
