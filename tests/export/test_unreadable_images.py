"""A calibration or evaluation image that does not decode (a truncated download) is skipped with a
note naming it and counted in the manifest, as acquisition skips such files; only a set with no
readable image at all is an error."""

from __future__ import annotations

import json
import re
import shutil

from pocketml.app import cli
from tests.export.export_helpers import tiny_model_dir


def truncate_copy(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 3])
    return dst


def test_a_truncated_image_is_skipped_named_and_counted(tmp_path, photos_dir, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(photos_dir, photos)
    # Every training cat truncated: whichever of them the (stratified) calibration set takes is unreadable.
    bad_train = [truncate_copy(path, path) for path in sorted((photos / "train" / "cat").glob("*.jpg"))]
    other = sorted((photos / "test" / "cat").glob("*.jpg"))[0]
    bad_test = truncate_copy(other, photos / "test" / "cat" / "truncated.jpg")
    out = tmp_path / "exp"
    argv = ["export", tiny_model_dir(tmp_path / "m"), "--out", out, "--formats", "tflite",
            "--precisions", "fp32,int8", "--calibration", photos]
    assert cli.main([str(a) for a in argv]) == 0
    stdout = capsys.readouterr().out
    images = json.loads((out / "manifest.json").read_text())["images"]
    assert images["calibration"]["unreadable"] and set(images["calibration"]["unreadable"]) <= {str(p) for p in bad_train}
    for path in images["calibration"]["unreadable"]:
        assert f"skipped unreadable calibration image: cannot read image {path}" in stdout.replace("\n", "")
    assert f"skipped unreadable evaluation image: cannot read image {bad_test}" in stdout.replace("\n", "")
    assert images["evaluation"]["unreadable"] == [str(bad_test)]
    assert str(bad_test) not in images["evaluation"]["images"]
    assert images["evaluation"]["count"] == len(list((photos_dir / "test").rglob("*.jpg")))


def test_a_set_with_no_readable_image_is_one_line_exit_2(tmp_path, photos_dir, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(photos_dir / "test", photos / "test")
    (photos / "train" / "cat").mkdir(parents=True)
    for i, src in enumerate(sorted((photos_dir / "train").rglob("*.jpg"))[:3]):
        truncate_copy(src, photos / "train" / "cat" / f"{i}.jpg")
    out = tmp_path / "exp"
    argv = ["export", tiny_model_dir(tmp_path / "m"), "--out", out, "--formats", "tflite",
            "--precisions", "int8", "--calibration", photos, "--no-validate"]
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(r"none of the \d+ calibration images", err), err
