"""App bundles: what an Android, iOS or ONNX Runtime developer copies into their project.

`out_dir/android/` (.tflite + labels.txt), `out_dir/ios/` (.mlpackage), `out_dir/onnx/` (.onnx +
labels.txt), each with a README.md listing its files and a short usage snippet. The benchmark
stage marks `recommended` artifacts in the manifest and calls `write_bundle_readmes` again.
"""

from __future__ import annotations

from pathlib import Path

from pocketml.artifact import EXPORTED, Artifact, ExportManifest
from pocketml.fsutil import atomic_write_text
from pocketml.spec import LABELS_FILE, write_labels

BUNDLE_DIRS = {"tflite": "android", "coreml": "ios", "onnx": "onnx"}
LABELLED_BUNDLES = ("android", "onnx")  # Core ML packages carry their labels inside

KOTLIN = """```kotlin
// build.gradle: implementation("org.tensorflow:tensorflow-lite-task-vision:0.4.4")
import org.tensorflow.lite.support.image.TensorImage
import org.tensorflow.lite.task.vision.classifier.ImageClassifier

val classifier = ImageClassifier.createFromFile(context, "{file}")  // copy into app/src/main/assets/
val results = classifier.classify(TensorImage.fromBitmap(bitmap))  // labels come from the file's metadata
val best = results[0].categories.maxByOrNull {{ it.score }}
Log.i("pocketml", "${{best?.label}} ${{best?.score}}")
```"""

SWIFT = """```swift
import CoreML
import Vision

// Drag {file} into Xcode; it generates a class with the package's name.
let model = try VNCoreMLModel(for: MLModel(contentsOf: {class_name}.urlOfModelInThisBundle))
let request = VNCoreMLRequest(model: model) {{ request, _ in
    guard let best = (request.results as? [VNClassificationObservation])?.first else {{ return }}
    print(best.identifier, best.confidence)
}}
request.imageCropAndScaleOption = .centerCrop  // the model was trained on centre crops
try VNImageRequestHandler(cvPixelBuffer: pixelBuffer).perform([request])
```"""

PYTHON = """```python
import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("{file}", providers=["CPUExecutionProvider"])
labels = open("labels.txt", encoding="utf-8").read().splitlines()
image = Image.open("photo.jpg").convert("RGB").resize(({width}, {height}))
pixels = np.asarray(image, dtype=np.float32)[None]  # [1, H, W, 3] RGB 0..255; normalised inside the model
probabilities = session.run(None, {{session.get_inputs()[0].name: pixels}})[0][0]
print(labels[int(probabilities.argmax())], float(probabilities.max()))
```"""

TITLES = {"android": "Android (TFLite / LiteRT)", "ios": "iOS (Core ML)", "onnx": "ONNX Runtime"}


def bundle_dir(out_dir: Path, fmt: str) -> Path:
    return Path(out_dir) / BUNDLE_DIRS.get(fmt, fmt)


def _pick(artifacts: list[Artifact]) -> Artifact:
    """The artifact the snippet uses: the recommended one, else the smallest that passed, else the first."""
    recommended = [a for a in artifacts if a.recommended]
    passed = [a for a in artifacts if a.parity.status == "passed" and a.bytes]
    if recommended:
        return recommended[0]
    return min(passed, key=lambda a: a.bytes or 0) if passed else artifacts[0]


def _row(artifact: Artifact) -> str:
    size = f"{artifact.bytes / 1e6:.2f} MB" if artifact.bytes else "-"
    mark = f"**{', '.join(artifact.recommended)}**" if artifact.recommended else ""
    parity = artifact.parity.status + (f" ({artifact.parity.reason})" if artifact.parity.reason else "")
    parity = parity.replace("|", "\\|")  # "max|dp|" must not split the Markdown table cell
    return f"| `{Path(artifact.path).name}` | {artifact.precision} | {size} | {parity} | {mark} |"


def readme_text(bundle: str, artifacts: list[Artifact], model: dict) -> str:
    chosen = _pick(artifacts)
    file = Path(chosen.path).name
    height, width = model.get("image_size", [0, 0])
    snippet = {"android": KOTLIN, "ios": SWIFT, "onnx": PYTHON}[bundle].format(
        file=file, class_name=Path(file).stem.replace("-", "_"), height=height, width=width
    )
    recommended = next((a for a in artifacts if a.recommended), None)
    advice = (
        f"Recommended: `{Path(recommended.path).name}` ({recommended.precision})."
        if recommended
        else "No artifact is marked recommended yet; run `pocketml bench` to measure and choose one."
    )
    lines = [
        f"# {TITLES[bundle]} bundle",
        "",
        f"Classes: {', '.join(model.get('labels', []))}. Input: {height}x{width} RGB pixels 0..255 "
        "(the model normalises internally).",
        "",
        advice,
        "",
        "| file | precision | size | parity vs Keras | recommended for |",
        "|---|---|---|---|---|",
        *(_row(a) for a in artifacts),
        "",
        snippet,
        "",
    ]
    return "\n".join(lines)


def write_bundle_readmes(out_dir: str | Path, manifest: ExportManifest) -> list[Path]:
    """(Re)write README.md in every bundle that has exported artifacts; returns the files written."""
    out_dir = Path(out_dir)
    written = []
    for fmt, bundle in BUNDLE_DIRS.items():
        artifacts = [a for a in manifest.artifacts if a.format == fmt and a.status == EXPORTED]
        if artifacts:
            written.append(atomic_write_text(out_dir / bundle / "README.md", readme_text(bundle, artifacts, manifest.model)))
    return written


def write_bundle_labels(out_dir: str | Path, manifest: ExportManifest) -> list[Path]:
    """labels.txt beside the files in bundles whose formats do not carry labels an app can read directly."""
    out_dir = Path(out_dir)
    labels = tuple(manifest.model.get("labels", ()))
    bundles = {BUNDLE_DIRS[a.format] for a in manifest.artifacts if a.status == EXPORTED and a.format in BUNDLE_DIRS}
    return [write_labels(out_dir / b / LABELS_FILE, labels) for b in LABELLED_BUNDLES if b in bundles]
