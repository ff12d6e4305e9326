"""A file that is not the model its name says (truncated download, wrong file renamed) is one line
naming it and what it is not, exit 2, in `pocketml predict`, `pocketml bench` and `pocketml.load`."""

from __future__ import annotations

import pytest

import pocketml
from pocketml.app import cli
from pocketml.errors import PocketMLError

BROKEN = ["fake.tflite", "fake.onnx", "fake.mlpackage", "fake.keras", "fake.h5"]


def broken_file(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".mlpackage"):  # a directory format: a package whose manifest is not JSON
        path.mkdir()
        (path / "Manifest.json").write_text("x\n")
    else:
        path.write_text("x\n")
    return path


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "img.jpg")
    return tmp_path / "img.jpg"


@pytest.mark.parametrize("name", BROKEN)
def test_predict_names_the_broken_file_and_exits_2(name, tmp_path, image, capsys):
    path = broken_file(tmp_path, name)
    assert cli.main(["predict", str(path), str(image)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(path) in err and "is not a" in err


@pytest.mark.parametrize("name", ["fake.tflite", "fake.onnx", "fake.mlpackage"])
def test_bench_names_the_broken_file_and_exits_2(name, tmp_path, capsys):
    path = broken_file(tmp_path, name)
    assert cli.main(["bench", str(path), "--out", str(tmp_path / "bench")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "is not a valid" in err


@pytest.mark.parametrize("name", BROKEN)
def test_load_raises_a_one_line_error(name, tmp_path):
    path = broken_file(tmp_path, name)
    with pytest.raises(PocketMLError, match="is not a") as caught:
        pocketml.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
