"""Core AI export: an `.aimodel` asset for iOS / macOS 27+, Apple's successor runtime to Core ML.

Apple's conversion path, measured here: the classifier (export/graph.py: float32 [1,H,W,3] RGB 0..255
in, normalisation inside, probabilities out) is saved as a .keras file and converted in a child
interpreter on Keras' torch backend (export/coreai_convert.py: torch.export -> coreai-torch). Labels,
the spec and the precision travel in the asset's creator-defined metadata (metadata.json).

The verdict on Linux comes from the runtime bundled in the `coreai-core` wheel (`coreai.runtime`, a
CPU build of Core AI with Swift's Linux runtime), not from the iOS 27 framework, which picks CPU, GPU
or Neural Engine when it loads the file. Everything Core AI needs is the optional extra
`pocketml[coreai]`, imported only when a Core AI file is converted or run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from pocketml.export.registry import Converted
from pocketml.export.runtime import META_SPEC, check_images, spec_from_metadata

from pocketml.artifact import ModelRecord
from pocketml.errors import PocketMLError
from pocketml.spec import ModelSpec

FORMAT = "coreai"
SUFFIX = ".aimodel"
PRECISIONS = ("fp32", "fp16", "compressed")
NEEDS_CALIBRATION: frozenset[str] = frozenset()
PLATFORMS = ("ios",)
RUNS_ON = "iOS 27+, macOS 27+ (Core AI)"
MIN_OS = 27
TITLE = "Core AI"
LABELS_BESIDE = False  # the asset's metadata.json carries them
RUNTIME = ("coreai.runtime from the coreai-core wheel: on Linux its bundled CPU build of Core AI "
           "(the iOS 27 framework picks CPU, GPU or Neural Engine itself)")
THREADED = False  # the runtime takes no thread count
RUNTIME_MODULE = "coreai.runtime"
SNIPPETS = {"ios": """```swift
import CoreAI

// iOS 27+ / macOS 27+: add {file} to the app target (Xcode needs its Metal toolchain to build it).
let url = Bundle.main.url(forResource: "{file}", withExtension: nil)!
let model = try await AIModel(contentsOf: url)  // specialised for this device's CPU, GPU or Neural Engine
guard let classify = try model.loadFunction(named: "main") else {{ fatalError("{file} has no main function") }}
// pixels: an NDArray [1, {height}, {width}, 3] of RGB 0..255 (Float32; Float16 for the fp16 file), the
// model normalises internally. Output "probabilities" [1, classes], in the order of the labels in
// the file's metadata.json (creatorDefinedMetadata "pocketml.labels").
let outputs = try await classify.run(inputs: ["image": pixels])
```"""}  # AIModel(contentsOf:), loadFunction(named:), run(inputs:) as Apple's Core AI reference documents them

EXTRA = "pip install 'pocketml[coreai]'"
CHILD_MODULE = "pocketml.export.coreai_convert"
FUNCTION = "main"  # the converter's one entry point
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
META_LABELS = "pocketml.labels"
META_PRECISION = "pocketml.precision"
META_INPUT = "pocketml.input"
# The compressed ladder's rungs, least lossy first (export/coreai_convert.py builds each): int8 per output
# channel, as Core ML's ladder starts, then per-tensor k-means palettes. Measured on the tests'
# EfficientNet-Lite0 (BatchNorm folded into the kernels, so channel ranges differ widely): an 8-bit
# per-tensor palette flipped 8 of 160 photos, int8 per channel none (max|dp| 0.12); a per-tensor 8-bit
# palette is larger than int8 and no better, so it is not a rung.
COMPRESSED_RUNGS = {
    "linear-8": ("int8 per channel", {"bits": 8, "granularity": "per_channel", "mode": "linear symmetric"}),
    "palettized-6": ("palette 6-bit", {"bits": 6, "granularity": "per_tensor", "mode": "k-means"}),
    "palettized-4": ("palette 4-bit", {"bits": 4, "granularity": "per_tensor", "mode": "k-means"}),
}
COMPRESS_MIN_WEIGHTS = 2048  # smaller kernels stay fp16, as coremltools' default leaves them
CONCURRENT_CALLS = max(2, os.cpu_count() or 1) * 2  # inference calls in flight while judging (see predict)
CHILD_TIMEOUT_S = 1800  # a conversion child that hangs is stopped (the variant fails, the others go on)


def bundle_extras(folder: Path, files: list[Path], model: ModelRecord) -> list[str]:
    return []  # the shipped files are all its bundle needs


def unavailable() -> str | None:
    """Why Core AI files cannot be made or run here (None: they can)."""
    import importlib.util

    missing = [m for m in ("coreai", "coreai_torch", "coreai_opt", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return f"Core AI needs the optional extra: {EXTRA} (missing {', '.join(missing)})"
    return None


def require() -> None:
    why = unavailable()
    if why:
        raise PocketMLError(why)


def convert(model, spec: ModelSpec, precision: str, out_path: Path, calibration: np.ndarray | None,
            judge=None) -> list[str] | Converted:
    """Write `model` as an .aimodel of `precision` to `out_path`; returns notes for the user.

    `compressed` is the first rung of COMPRESSED_RUNGS (least lossy first) within budget (`judge`) and at
    most SIZE_GOAL of the fp32 asset's size: Core ML's ladder, with Core AI's dequantise and look-up-table ops."""
    if precision not in PRECISIONS:
        raise PocketMLError(f"unknown Core AI precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    require()
    if any(type(layer).__name__ == "SavedModelSignature" for layer in model.layers):
        raise PocketMLError("Core AI converts through Keras on the torch backend, where a TensorFlow SavedModel "
                            "cannot run; export the model's .keras (or .h5) file instead")
    if precision == "compressed":
        return _compressed(model, spec, Path(out_path), judge)
    with tempfile.TemporaryDirectory(prefix="pocketml-coreai-") as work:
        work = Path(work)
        asset = work / f"model{SUFFIX}"  # the converter insists on the suffix; atomic_output's path has it too
        convert_in_child(model, spec, work, [(precision, asset)])
        os.replace(asset, out_path)
    if precision == "fp16":
        return ["coreai fp16: weights, compute, input and output in float16 (pixels 0..255 are exact in float16)"]
    return []


def _compressed(model, spec: ModelSpec, out_path: Path, judge) -> Converted:
    """One child writes fp32 (the size reference) and the first rung; a later rung is converted only
    when the ladder reaches it (a child each: most models stop at the first)."""
    from pocketml.export.quantization.coreml import SIZE_GOAL, size_precheck
    from pocketml.export.quantization.search import Built, Candidate, Step, move_into_place, run_ladder

    from pocketml.fsutil import tree_bytes

    with tempfile.TemporaryDirectory(prefix="pocketml-coreai-ladder-") as work:
        work = Path(work)
        built = {recipe: work / f"{recipe}{SUFFIX}" for recipe in COMPRESSED_RUNGS}
        first = next(iter(built.items()))
        convert_in_child(model, spec, work, [("fp32", work / f"fp32{SUFFIX}"), first])
        fp32_bytes = tree_bytes(work / f"fp32{SUFFIX}")

        def rung(recipe: str) -> Candidate:
            def build(path: Path) -> Built:
                if not built[recipe].exists():
                    convert_in_child(model, spec, work, [(recipe, built[recipe])])
                os.replace(built[recipe], path)
                return Built(integer_only=None, notes=[])
            step, settings = COMPRESSED_RUNGS[recipe]
            return Candidate(step, {**settings, "min_weights": COMPRESS_MIN_WEIGHTS}, build)

        rungs = [rung(recipe) for recipe in COMPRESSED_RUNGS]
        precheck = size_precheck(fp32_bytes)
        if judge is None:  # nothing to judge with: the first rung within the size goal
            for number, candidate in enumerate(rungs):
                path = work / f"unjudged-{number}{SUFFIX}"
                candidate.build(path)
                if precheck(Step(candidate.step, candidate.settings, "not judged", bytes=tree_bytes(path))) is None:
                    move_into_place(path, out_path)
                    return Converted([f"coreai compressed: {candidate.step}; not judged (no evaluation images)"],
                                     {"recipe": candidate.settings, "fp32_bytes": fp32_bytes})
            raise PocketMLError(f"no coreai compressed rung is within {SIZE_GOAL:.0%} of fp32's size")
        outcome = run_ladder(sys.modules[__name__], "compressed", rungs, judge, work, precheck=precheck)
        if outcome.path is None:
            raise PocketMLError(f"no rung of the coreai compressed ladder was within {SIZE_GOAL:.0%} of fp32's size: "
                                + "; ".join(f"{s.step}: {s.reason}" for s in outcome.steps))
        move_into_place(outcome.path, out_path)
    chosen = outcome.chosen
    verdict = "within budget" if chosen.status == "passed" else "no rung within budget; kept the closest"
    note = (f"coreai compressed: ladder took {len(outcome.steps)} step(s) in {outcome.seconds:.0f} s, {verdict}: "
            f"{chosen.step}, {chosen.bytes / fp32_bytes:.3f} of fp32's {fp32_bytes / 1e6:.2f} MB")
    return Converted([note], outcome.details("compressed", fp32_bytes=fp32_bytes, size_goal=SIZE_GOAL))


def convert_in_child(model, spec: ModelSpec, work: Path, outputs: list[tuple[str, Path]]) -> None:
    """Save `model` as .keras under `work` and convert it to each (variant, path) in one child."""
    keras_file = work / "classifier.keras"
    model.save(keras_file)
    request = work / "request.json"
    request.write_text(json.dumps({
        "model": str(keras_file),
        "size": list(spec.image_size),
        "metadata": {"description": f"pocketml image classifier: {', '.join(spec.labels)}",
                     META_LABELS: list(spec.labels), META_SPEC: json.dumps(spec.to_dict())},
        "outputs": [(variant, str(path)) for variant, path in outputs],
    }))
    env = dict(os.environ, KERAS_BACKEND="torch")
    done = subprocess.run([sys.executable, "-m", CHILD_MODULE, str(request)], env=env, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"Core AI conversion failed in its torch-backend child (exit {done.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")


def read_metadata(path: Path) -> dict:
    """The asset's creator-defined metadata (pocketml's keys), read from its metadata.json."""
    file = Path(path) / "metadata.json"
    if not Path(path).is_dir() or not file.is_file():
        raise PocketMLError(f"{path} is not a Core AI asset (a .aimodel folder with metadata.json)")
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("creatorDefinedMetadata") or {}
    except json.JSONDecodeError as exc:
        raise PocketMLError(f"{file} is not valid JSON ({exc.msg})") from None


def read_spec(path: Path) -> ModelSpec:
    metadata = read_metadata(path)
    return spec_from_metadata({k: v for k, v in metadata.items() if isinstance(v, str)}, path)


def read_labels(path: Path) -> tuple[str, ...] | None:
    labels = read_metadata(path).get(META_LABELS)
    return tuple(labels) if labels else None


def read_precision(path: Path) -> str | None:
    return read_metadata(path).get(META_PRECISION)


def latency_unavailable() -> str | None:
    return unavailable()


class CoreAIPredictor:
    """An .aimodel run by coreai.runtime; see export/predictor.py for the contract. The asset is
    compiled once (the runtime's `executable()`), on an event loop of its own that every call reuses."""

    def __init__(self, path: Path) -> None:
        require()
        from coreai.authoring.asset import AIModelAsset

        self.spec = read_spec(path)
        self.name = f"{FORMAT}-{read_precision(path) or Path(path).stem}"
        self.input_size = tuple(self.spec.image_size)
        self._loop = asyncio.new_event_loop()
        self._executable = AIModelAsset.load(Path(path)).executable()
        model = self._loop.run_until_complete(self._executable.__aenter__())
        self._function = model.load_function(FUNCTION)
        self._dtype = self._input_dtype(path)

    def _input_dtype(self, path: Path) -> np.dtype:
        """float32 for the fp32 asset; the fp16 cast pass made every other asset's input float16."""
        return np.dtype(np.float32) if read_precision(path) == "fp32" else np.dtype(np.float16)

    def _run(self, image: np.ndarray) -> np.ndarray:
        from coreai.runtime import NDArray

        outputs = self._loop.run_until_complete(self._function({INPUT_NAME: NDArray(image)}))
        return outputs[OUTPUT_NAME].numpy().astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities of `images`, CONCURRENT_CALLS calls in flight at once: one call runs on one
        core (measured: 0.73 s per compressed 96 px image one by one, 0.49 s with 6 in flight on 2 cores)."""
        from coreai.runtime import NDArray

        images = check_images(images, self.input_size).astype(self._dtype)
        if not len(images):
            return np.zeros((0, len(self.spec.labels)), np.float32)

        async def chunk(batch: np.ndarray) -> list:
            return await asyncio.gather(*(self._function({INPUT_NAME: NDArray(image[None])}) for image in batch))

        outputs = []
        for start in range(0, len(images), CONCURRENT_CALLS):
            outputs += self._loop.run_until_complete(chunk(images[start : start + CONCURRENT_CALLS]))
        return np.concatenate([o[OUTPUT_NAME].numpy().astype(np.float32) for o in outputs])

    def invoker(self, image: np.ndarray):
        prepared = check_images(image, self.input_size).astype(self._dtype)
        return lambda: self._run(prepared)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._executable.__aexit__(None, None, None))
            self._loop.close()


def load(path: Path, threads: int | None = None) -> CoreAIPredictor:
    """A Predictor for an .aimodel (`threads` is not a setting of the Core AI runtime)."""
    return CoreAIPredictor(Path(path))
