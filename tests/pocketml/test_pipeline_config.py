"""The pipeline TOML is validated up front: one line naming the key, the value and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketml.app.cli import main
from pocketml.app.pipeline import load_pipeline_config
from pocketml.configs.pipeline import PipelineConfig
from pocketml.errors import PocketMLError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GLYPHS = """
run_dir = "runs/x"
[[acquire.sources]]
type = "glyphs"
letters = ["A", "B"]
per_letter = 4
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


def test_a_minimal_file_gets_every_other_setting_from_the_stage_defaults(tmp_path):
    config = load_pipeline_config(write(tmp_path, GLYPHS + "[train]\nepochs_frozen = 3\n"))
    assert isinstance(config, PipelineConfig)
    assert config.run_dir == Path("runs/x")
    assert config.acquire.sources == [{"type": "glyphs", "letters": ["A", "B"], "per_letter": 4}]
    assert config.train.epochs_frozen == 3
    assert config.export == PipelineConfig().export and config.bench == PipelineConfig().bench


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GLYPHS + "[trian]\nepochs_frozen = 3\n",
         r"unknown key 'trian' \(did you mean 'train'\?\); accepted keys: acquire, bench, curate, export, run_dir, train"),
        (GLYPHS + "[bench]\nthread = [1]\n", r"unknown key 'bench.thread' \(did you mean 'threads'\?\); accepted keys: .*min_time_s"),
        (GLYPHS + "[train]\nepochs_frozen = \"ten\"\n", r"train.epochs_frozen = 'ten' is not accepted; expected int"),
        (GLYPHS + "[export]\nopset = 9\n", r"opset 9 is not accepted; use 13..18"),
        (GLYPHS + "[export]\nopset = 19\n", r"opset 19 is not accepted; use 13..18"),
        (GLYPHS + "[export]\nprecisions = [\"fp8\"]\n", r"\[export\] unknown precision\(s\) fp8 .*accepted: fp32"),
        (GLYPHS + "[train]\nbackbone = \"mobilenetv2\"\n",
         r"\[train\] unknown backbone 'mobilenetv2' \(did you mean 'mobilenet_v2'\?\)"),
        (GLYPHS + "[train]\nimage_size = 16\n", r"\[train\] image size 16 px is too small for mobilenet_v2"),
        (GLYPHS + "[train]\nweights = \"nowhere.h5\"\n", r"\[train\] weights 'nowhere.h5' is not a file"),
        (GLYPHS + "[bench]\nthreads = [0]\n", r"threads = \[0\] is not accepted; give thread counts >= 1"),
        (GLYPHS + "[curate]\nnear_distance = 12\ngroup_distance = 10\n", r"near_distance 12 and group_distance 10"),
        (GLYPHS + "[acquire.download]\nthreds = 4\n", r"unknown key 'acquire.download.threds' \(did you mean 'threads'\?\)"),
        (GLYPHS.replace("per_letter", "per_leter"),
         r"unknown key 'acquire.sources\[0\]\(glyphs\).per_leter' \(did you mean 'per_letter'\?\)"),
        (GLYPHS.replace('"glyphs"', '"glyph"'), r"unknown source type 'glyph'; accepted types: urls, imagenet, .*glyphs"),
        (GLYPHS.replace('["A", "B"]', '["AB"]'), r"letters = \['AB'\] is not accepted; each entry is one character"),
        ("run_dir = 3\n", r"run_dir = 3 is not accepted; expected Path"),
        ("[train]\nepochs_frozen = 3\n", r"\[acquire\] has no sources; add at least one \[\[acquire.sources\]\] table"),
    ],
)
def test_bad_files_are_refused_with_one_line_naming_key_value_and_accepted(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PocketMLError, match=message) as info:
        load_pipeline_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_invalid_toml_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(PocketMLError, match=r"is not valid TOML"):
        load_pipeline_config(write(tmp_path, "[train\n"))
    with pytest.raises(PocketMLError, match=r"nope.toml does not exist"):
        load_pipeline_config(tmp_path / "nope.toml")


def test_cli_reports_a_bad_key_on_one_line_before_any_stage_runs(tmp_path, capsys):
    path = write(tmp_path, GLYPHS + "[curate]\nno_such_key = 1\n")
    run_dir = tmp_path / "run"
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pocketml run: error: ") and "unknown key 'curate.no_such_key'" in err
    assert len(err.splitlines()) == 1
    assert not run_dir.exists()  # nothing started


def test_a_bad_backbone_stops_the_run_before_acquire(tmp_path, capsys):
    import time

    path = write(tmp_path, GLYPHS + "[train]\nbackbone = \"mobilenetv2\"\n")
    run_dir = tmp_path / "run"
    started = time.perf_counter()
    assert main(["run", str(path), "--run-dir", str(run_dir)]) == 2
    assert time.perf_counter() - started < 5  # the first second, not after acquire and curate
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "[train] unknown backbone 'mobilenetv2'" in err
    assert not run_dir.exists()


@pytest.mark.parametrize("name", ["demo.toml", "folder.toml", "hotdog_imagenet.toml", "hotdog_openimages.toml"])
def test_every_example_validates(name):
    config = load_pipeline_config(EXAMPLES / name)
    assert config.acquire.sources


def test_reduced_demo_config_validates():
    config = load_pipeline_config(EXAMPLES.parent / "tests" / "e2e" / "demo_small.toml")
    assert config.train.backbone == "efficientnet_lite0"
    assert [s["type"] for s in config.acquire.sources] == ["glyphs"]
