"""Core AI (.aimodel): the optional fourth format. Without the `pocketml[coreai]` extra, asking for it
is a one-line error and the default export leaves it out with a note; with the extra (slow tier, CI
installs it), files are converted through Keras on torch and judged by the coreai-core runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

EXTRA_MODULES = ["coreai", "coreai_torch", "coreai_opt", "torch"]

# A child interpreter where the extra's modules cannot be imported (a None entry in sys.modules is
# Python's own way to make an import fail), as on an install without the extra.
WITHOUT_EXTRA = """
import sys
sys.modules.update(dict.fromkeys({modules}))
from pocketml.export.exporter import format_modules
skipped = []
print(json.dumps({{"default": list(format_modules([], skipped)), "skipped": skipped}}))
from pocketml.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_extra_coreai_is_a_one_line_error_and_the_default_export_skips_it(tmp_path):
    script = "import json\n" + WITHOUT_EXTRA.format(modules=EXTRA_MODULES)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", script, "export", str(tmp_path / "model.keras"), "--formats",
                           "coreai", "--out", str(out)], capture_output=True, text=True, timeout=300)
    default = json.loads(done.stdout.splitlines()[0])
    assert default["default"] == ["tflite", "coreml", "onnx"]
    assert default["skipped"] == [
        "coreai skipped: Core AI needs the optional extra: pip install 'pocketml[coreai]' "
        "(missing coreai, coreai_torch, coreai_opt, torch)"]
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "pocketml[coreai]" in line]
    assert len(errors) == 1 and errors[0].startswith("pocketml export: error: format 'coreai': Core AI needs the optional extra")
    assert not out.exists()  # refused before anything was written


@pytest.fixture(scope="module")
def photos(photos_dir):
    from tests.export.user_models import photo_test_split

    return photo_test_split(photos_dir)


@pytest.fixture(scope="module")
def coreai_export(real_model_dir, photos_dir, tmp_path_factory):
    pytest.importorskip("coreai_torch", reason="needs the optional extra pocketml[coreai]")
    from pocketml.export.exporter import export_model

    from pocketml.configs.export import ExportConfig

    out = tmp_path_factory.mktemp("coreai") / "export"
    config = ExportConfig(formats=["coreai"], precisions=["fp32", "fp16", "compressed"], validation_images=photos_dir)
    return export_model(real_model_dir, out, config), out


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the fixture: a fitted EfficientNet-Lite0, then 3 torch-backend children and a ladder
def test_coreai_files_are_judged_by_the_coreai_runtime_like_every_other_file(coreai_export):
    manifest, out = coreai_export
    fp32, fp16 = manifest.find("coreai", "fp32"), manifest.find("coreai", "fp16")
    assert fp32.passed and fp16.passed, (fp32.parity, fp16.parity)
    assert fp32.parity.max_abs_diff <= 1e-4 and fp32.parity.top1_agreement == 1.0
    assert fp16.bytes < 0.6 * fp32.bytes  # float16 weights
    compressed = manifest.find("coreai", "compressed")
    assert compressed.status == "exported" and compressed.details["search"]["chosen"].startswith("palette")
    assert compressed.bytes <= 0.30 * fp32.bytes and compressed.parity.images > 0  # judged like every file
    assert (out / fp32.path / "main.mlirb").is_file()
    metadata = json.loads((out / fp32.path / "metadata.json").read_text())["creatorDefinedMetadata"]
    assert metadata["pocketml.labels"] == ["cat", "coffee"] and metadata["pocketml.precision"] == "fp32"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: per-tensor k-means palettes (8/6/4 bits) of this EfficientNet-Lite0 "
                   "flip 1 of 32 photos (max|dp| 0.61); grouped palettes or keeping sensitive kernels is not built yet")
def test_the_compressed_coreai_file_is_within_budget(coreai_export):
    manifest, _ = coreai_export
    assert manifest.find("coreai", "compressed").passed


@pytest.mark.slow
def test_predict_and_load_read_an_aimodel(coreai_export, keras_model, photos):
    from pocketml.export.predict import load

    from pocketml.dataset import load_images

    _, out = coreai_export
    images = load_images(photos[0][:8], (96, 96))
    model = load(out / "coreai" / "model-fp32.aimodel")
    assert model.labels == ("cat", "coffee") and model.format == "coreai"
    probs = model.predictor.predict(images)
    reference = keras_model.predict(images.astype(np.float32), verbose=0)
    assert np.abs(probs - reference).max() <= 1e-4


@pytest.mark.slow
def test_a_savedmodel_cannot_take_the_torch_path_and_says_so(photos_dir, tmp_path):
    pytest.importorskip("coreai_torch", reason="needs the optional extra pocketml[coreai]")
    from tests.export import user_models as um

    export_dir, _, _ = um.exported_case("subclassed-savedmodel", photos_dir, tmp_path, formats=("coreai",))
    from pocketml.artifact import ExportManifest

    artifact = ExportManifest.load(export_dir).find("coreai", "fp32")
    assert artifact.status == "failed" and "SavedModel" in artifact.reason
