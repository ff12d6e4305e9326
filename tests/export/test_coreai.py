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
def coreai_export(default_export):
    """The default export, which with the extra holds the Core AI files (fp32, fp16 and the ladder's)."""
    pytest.importorskip("coreai_torch", reason="needs the optional extra pocketml[coreai]")
    return default_export


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the shared default export: every format, then 3 torch-backend children and a ladder
def test_coreai_files_are_judged_by_the_coreai_runtime_like_every_other_file(coreai_export):
    manifest, out = coreai_export
    fp32, fp16 = manifest.find("coreai", "fp32"), manifest.find("coreai", "fp16")
    assert fp32.passed and fp16.passed, (fp32.parity, fp16.parity)
    assert fp32.parity.max_abs_diff <= 1e-4 and fp32.parity.top1_agreement == 1.0
    assert fp16.bytes < 0.6 * fp32.bytes  # float16 weights
    compressed = manifest.find("coreai", "compressed")
    assert compressed.status == "exported" and compressed.details["search"]["chosen"] in ("int8 per channel", "palette 6-bit", "palette 4-bit")
    assert compressed.bytes <= 0.30 * fp32.bytes and compressed.parity.images > 0  # judged like every file
    assert (out / fp32.path / "main.mlirb").is_file()
    metadata = json.loads((out / fp32.path / "metadata.json").read_text())["creatorDefinedMetadata"]
    assert metadata["pocketml.labels"] == ["cat", "coffee"] and metadata["pocketml.precision"] == "fp32"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_compressed_coreai_file_is_within_budget(coreai_export):
    # Measured: per-tensor palettes flipped photos of this EfficientNet-Lite0 at any bit width (8-bit: 8 of
    # 160); int8 with a scale per output channel keeps every decision.
    manifest, _ = coreai_export
    compressed = manifest.find("coreai", "compressed")
    assert compressed.passed, compressed.parity
    assert compressed.details["search"]["chosen"] == "int8 per channel"


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


def test_int8_per_channel_gives_each_output_channel_its_own_scale():
    from pocketml.export.coreai_convert import int8_per_channel

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 1, 16, 4)) * np.array([1e-3, 1.0, 30.0, 0.0])  # folded BatchNorm: far-apart ranges
    values, scale = int8_per_channel(kernel)
    assert values.dtype == np.int8 and scale.shape == (1, 1, 1, 4)
    error = np.abs(values * scale - kernel).max(axis=(0, 1, 2))
    assert (error[:3] <= scale.ravel()[:3] / 2 + 1e-12).all()  # rounding only, on the smallest channel too
    assert (values[..., 3] == 0).all()  # an all-zero channel stays zero
    depthwise, depthwise_scale = int8_per_channel(rng.normal(size=(3, 3, 6, 1)))
    assert depthwise_scale.shape == (1, 1, 6, 1) and np.abs(depthwise).max() == 127
