"""pocketml as a user installs it: a wheel whose only top-level package is `pocketml`, without the
development scripts of benchmarks/, whose commands work from a folder holding the user's own
`export/` and `training/` packages."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory) -> tuple[Path, str]:
    """The built wheel and what the build printed."""
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the dev extra carries the setuptools the build needs, so no network is used.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                            str(out), str(ROOT)], check=True, capture_output=True, text=True)
    (found,) = out.glob("pocketml-*.whl")
    return found, build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel(wheel_build) -> Path:
    return wheel_build[0]


def test_the_build_declares_every_package_it_ships(wheel_build):
    # setuptools warns (and a later setuptools drops the folder) when a shipped folder is not a declared package.
    assert "would be ignored" not in wheel_build[1] and "is absent from the `packages`" not in wheel_build[1]


def test_the_wheel_installs_one_top_level_package_and_no_development_scripts(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"pocketml", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for stage in ("acquisition", "acquisition/sources", "training", "export", "export/quantization", "benchmarks"):
        assert f"pocketml/{stage}/__init__.py" in names
    assert "pocketml/benchmarks/phones.json" in names  # package data travels with its package
    assert {"pocketml/benchmarks/devices/arm64_count.c", "pocketml/benchmarks/devices/arm64_guest.py"} <= set(names)
    assert {"pocketml/export/web/classify.js", "pocketml/export/web/index.html", "pocketml/export/web/try.html",
            "pocketml/benchmarks/devices/web_device.html"} <= set(names)  # the web bundle's and device's pages
    scripts = [n for n in names if n.endswith(("_bench.py", "_check.py", "_speed.py", "_inventory.py", "_anchor.py"))]
    assert scripts == []


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, wheel: Path) -> Path:
    """A new venv holding only the wheel; its dependencies come from this environment's site-packages
    through a .pth line (a directory named there has its own .pth files ignored, so this environment's
    editable pocketml stays out)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Every site-packages this interpreter sees (a venv's own, or those a .pth line adds to it).
    dependencies = [p for p in sys.path if p.endswith("site-packages")] or [sysconfig.get_paths()["purelib"]]
    (Path(site) / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return venv


def test_commands_run_from_a_folder_with_the_users_own_export_and_training_packages(
        fresh_venv: Path, real_model_dir: Path, photos_dir: Path, tmp_path: Path):
    work = tmp_path / "notebook"
    for name in ("export", "training"):
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(fresh_venv / "bin" / "python"), "-c", "import pocketml.export; print(pocketml.export.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(fresh_venv) in where, where
    pocketml = str(fresh_venv / "bin" / "pocketml")
    export = subprocess.run([pocketml, "export", str(real_model_dir), "--out", "exported", "--formats", "tflite",
                             "--precisions", "fp32", "--images", str(photos_dir)],
                            cwd=work, env=env, capture_output=True, text=True)
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-2000:]
    photo = next((photos_dir / "test").rglob("*.jpg"))
    predict = subprocess.run([pocketml, "predict", "exported/tflite/model-fp32.tflite", str(photo)],
                             cwd=work, env=env, capture_output=True, text=True)
    assert predict.returncode == 0, predict.stdout[-2000:] + predict.stderr[-2000:]
    labels = (real_model_dir / "labels.txt").read_text().split()
    assert any(label in predict.stdout for label in labels), predict.stdout
