"""The ONNX bundle ready for ONNX Runtime Mobile: fixed-input and .ort copies of the judged files that
ONNX Runtime's own mobile usability checker finds NNAPI covers in one partition (fp32 and int8 of an
EfficientNet-Lite0 classifier, standing in for the demo model), and the README's Python snippet runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def onnx_bundle(real_model_dir, photos_dir, tmp_path_factory):
    from pocketml.export.exporter import export_model
    from pocketml.export.package import package

    from pocketml.configs.export import ExportConfig

    base = tmp_path_factory.mktemp("onnx-mobile")
    config = ExportConfig(formats=["onnx"], precisions=["fp32", "int8"], calibration=photos_dir)
    manifest = export_model(real_model_dir, base / "export", config)
    assert all(a.passed for a in manifest.artifacts), [a.parity for a in manifest.artifacts]
    package(base / "export", base / "bundles")
    return base / "export", base / "bundles" / "onnx"


@pytest.mark.slow
def test_onnx_runtimes_checker_finds_one_nnapi_partition_covering_every_node(onnx_bundle):
    _, bundle = onnx_bundle
    for precision in ("fp32", "int8"):
        done = subprocess.run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability",
                               str(bundle / "mobile" / f"model-{precision}.onnx")],
                              capture_output=True, text=True, timeout=600)
        report = done.stdout + done.stderr
        assert "NNAPI should work well for this model as there is one partition covering 100.0% of the nodes" in report
        assert "Model should perform well with NNAPI as is: YES" in report
    readme = (bundle / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `mobile/")]
    assert len(rows) == 2
    assert all(re.search(r"\.ort` \| (\d+)/\1 nodes \(100%\) in 1 partition\(s\) \|", row) for row in rows), rows


@pytest.mark.slow
def test_the_mobile_files_give_the_judged_files_outputs(onnx_bundle, photos_dir):
    import onnxruntime as ort

    from pocketml.dataset import load_images
    from tests.export.user_models import photo_test_split

    export_dir, bundle = onnx_bundle
    images = load_images(photo_test_split(photos_dir)[0][:4], (96, 96))
    for precision in ("fp32", "int8"):
        judged = ort.InferenceSession(str(export_dir / "onnx" / f"model-{precision}.onnx"))
        for mobile in (f"model-{precision}.onnx", f"model-{precision}.ort"):
            session = ort.InferenceSession(str(bundle / "mobile" / mobile))
            assert session.get_inputs()[0].shape == [1, 96, 96, 3]
            for image in images.astype(np.float32):
                expected = judged.run(None, {"image": image[None]})[0]
                got = session.run(None, {"image": image[None]})[0]
                if mobile.endswith(".onnx") or precision == "fp32":  # the same graph, run the same way
                    assert np.abs(got - expected).max() <= 1e-5, mobile
                else:  # the int8 .ort's quantise/dequantise pairs run in float on desktop ONNX Runtime
                    assert got.argmax() == expected.argmax(), mobile


@pytest.mark.slow
def test_the_bundle_readmes_python_snippet_runs_as_written(onnx_bundle, photos_dir, tmp_path):
    _, bundle = onnx_bundle
    work = shutil.copytree(bundle, tmp_path / "app")
    photo = next((photos_dir / "test" / "coffee").iterdir())
    shutil.copy(photo, work / "photo.jpg")
    snippet = re.search(r"```python\n(.*?)```", (work / "README.md").read_text(), re.S).group(1)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    label, probability = done.stdout.split()
    assert label in ("cat", "coffee") and 0.5 <= float(probability) <= 1.0
