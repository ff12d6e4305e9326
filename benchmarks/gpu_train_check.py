"""GPU training check: pocketml's `train` on the JAX backend, EfficientNet-Lite0 at 224 px, both phases.

Written for a GPU machine that has Python 3.12 and JAX with CUDA but no TensorFlow, no Keras and no
network: the few wheels it lacks are carried in, unpacked into a target folder and put on sys.path
with the project, before keras is first imported. It trains on carried photos for a fixed amount
of work (phase 1: `--copies` augmented feature passes; phase 2: `--epochs` x `--steps` batches of
`--device-batch` images per device), then prints per phase: images/s (steady: the passes and epoch
that compile are left out), the share of that steady wall time the GPU was busy (NVML utilisation,
sampled every 50 ms), loader vs step time per batch, peak GPU memory, final val accuracy and the
goal ratios; writes the model directory (model.keras ...) under OUT/model and ends with `RESULT {json}`.

Prepare on the CPU machine (ignored folder .gpu/, about 22 MB):

    make gpu-wheels gpu-check-data

On the GPU machine (the `run` tool, carry [".gpu"]):

    python3 benchmarks/gpu_train_check.py --wheels .gpu/wheels --data .gpu/data/hotdog --out $OUT

Back on the CPU machine, export that file and check it against itself on TensorFlow:

    pocketml export OUT/model --out runs/gpu_export --images .gpu/data/hotdog

With no arguments it runs the H200 settings on ../shared's hot-dog photos with this environment's
packages; `--image-size 64 --device-batch 16 ...` make it a CPU-sized smoke run (tests do that).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODEL_FILES = ("model.keras", "spec.json", "labels.txt", "history.csv", "training.json", "eval.json")
GOAL_IMAGES_PER_S = 2000.0  # phase 2 at 224 px on one H200 (issue 16)
GOAL_GPU_BUSY = 0.80  # share of phase 2's wall time with a kernel running
SAMPLE_S = 0.05  # NVML sampling period


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, help="folder of carried .whl files to unpack first")
    parser.add_argument("--target", type=Path, default=Path("/tmp/pocketml-site"), help="where wheels unpack")
    parser.add_argument("--data", type=Path, help="ImageFolder/dataset dir (default: ../shared hot-dog photos)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")))
    parser.add_argument("--backend", default="jax", help="Keras backend (jax on the GPU machine)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device-batch", type=int, default=256, help="images per step per device")
    parser.add_argument("--copies", type=int, default=8, help="augmented feature passes in phase 1")
    parser.add_argument("--frozen-epochs", type=int, default=30, help="head epochs on the cached features")
    parser.add_argument("--epochs", type=int, default=4, help="phase-2 epochs (the first one also compiles)")
    parser.add_argument("--steps", type=int, default=24, help="batches per phase-2 epoch")
    parser.add_argument("--unfreeze", type=int, default=4, help="top backbone blocks trained in phase 2")
    return parser.parse_args(argv)


def unpack_wheels(wheels: Path, target: Path) -> None:
    """pip-install the carried wheels into `target` (no index, no dependencies) and import from there."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        sys.exit(f"no .whl files in {wheels}; run `make gpu-wheels` on the CPU machine and carry .gpu")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, found)], check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))


class GpuSampler:
    """GPU utilisation (percent of time a kernel ran) sampled in a thread through NVML."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.source = "nvml"
        except Exception as exc:  # no NVML (CPU machine, no driver): utilisation is reported as null
            print(f"note: no GPU utilisation ({type(exc).__name__}: {exc})")

    def __enter__(self) -> GpuSampler:
        if self.source:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.samples.append((time.time(), float(self._read())))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def busy_share(self, start: float, end: float) -> float | None:
        window = [u for t, u in self.samples if start <= t <= end]
        return round(sum(window) / (100.0 * len(window)), 3) if window else None


def peak_memory_bytes(backend: str) -> int | None:
    """Peak bytes the framework's allocator held on the first GPU (None on CPU)."""
    if backend == "jax":
        import jax

        stats = [d.memory_stats() for d in jax.local_devices() if d.platform == "gpu"]
        return max((s or {}).get("peak_bytes_in_use", 0) for s in stats) if stats else None
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.wheels:
        unpack_wheels(args.wheels, args.target)
    os.environ["KERAS_BACKEND"] = args.backend  # before anything imports keras
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from pocketml.benchmarks.common import machine_info, print_result, shared_data
    from pocketml.training.train import train

    from pocketml.configs.train import TrainConfig
    from pocketml.console import print_table

    data = args.data or shared_data("hotdog")
    config = TrainConfig(
        backbone="efficientnet_lite0", weights="imagenet", image_size=args.image_size, batch_size=32,
        epochs_frozen=args.frozen_epochs, epochs_finetune=args.epochs, feature_cache_copies=args.copies,
        unfreeze_blocks=args.unfreeze, patience=max(args.frozen_epochs, args.epochs),
        device_batch_size=args.device_batch, steps_per_epoch=args.steps, backend=args.backend,
    )
    scratch = Path(tempfile.mkdtemp(prefix="pocketml-gpu-check-"))
    model_dir = scratch / "model"
    started = time.perf_counter()
    with GpuSampler() as sampler:
        train(data, model_dir, config)
    seconds = time.perf_counter() - started
    run = json.loads((model_dir / "training.json").read_text())
    report = json.loads((model_dir / "eval.json").read_text())
    frozen, finetune = (next(p for p in run["phases"] if p["phase"] == name) for name in ("frozen", "finetune"))
    busy = {p["phase"]: sampler.busy_share(p["steady_started_at"], p["steady_ended_at"]) for p in (frozen, finetune)}
    steps = finetune["steps"]
    figures = {
        "benchmark": "gpu_train_check",
        "backend": run["backend"], "platform": run["platform"], "device": run["kind"], "devices": run["devices"],
        "precision": run["precision"], "batch_size": run["batch_size"], "image_size": args.image_size,
        "phase1_images": frozen["images"], "phase1_images_per_s": frozen["images_per_s"],
        "phase1_first_pass_s": frozen["first_pass_seconds"], "phase1_gpu_busy": busy["frozen"],
        "phase2_steps": steps, "phase2_images_per_s": finetune["images_per_s"],
        "phase2_first_epoch_s": finetune["first_epoch_seconds"], "phase2_gpu_busy": busy["finetune"],
        "phase2_step_s": finetune["train_seconds"] / steps, "phase2_loader_s_per_batch": finetune["loader_seconds"] / steps,
        "peak_gpu_memory_bytes": peak_memory_bytes(run["backend"]), "gpu_sampler": sampler.source,
        "eval_accuracy": report["accuracy"], "eval_split": report["split"], "seconds": round(seconds, 1),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "phase2_vs_goal": finetune["images_per_s"] / GOAL_IMAGES_PER_S if finetune["images_per_s"] else None,
        "goal_phase2_images_per_s": GOAL_IMAGES_PER_S, "goal_gpu_busy": GOAL_GPU_BUSY,
        "machine": machine_info(),
    }
    print_table(
        f"gpu train check: {figures['device']} x {figures['devices']}, {figures['precision']}, "
        f"EfficientNet-Lite0 {args.image_size} px, {figures['batch_size']} images per step",
        ("phase", "images", "images/s", "GPU busy", "first pass/epoch s", "vs goal"),
        [("1 features", frozen["images"], frozen["images_per_s"], busy["frozen"], frozen["first_pass_seconds"], None),
         ("2 fine-tune", finetune["images"], finetune["images_per_s"], busy["finetune"],
          finetune["first_epoch_seconds"], figures["phase2_vs_goal"])],
    )
    print(f"{report['split']} accuracy {report['accuracy']:.4f}; peak GPU memory "
          f"{figures['peak_gpu_memory_bytes'] or 0:,} bytes; phase 2 per batch: step {figures['phase2_step_s']:.4f} s, "
          f"loader {figures['phase2_loader_s_per_batch']:.4f} s (on {run['loader_workers']} threads); {seconds:.0f} s in all")
    kept = args.out / "model"  # what comes back from the GPU machine: 8 files at most
    kept.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, kept / name)
    shutil.rmtree(scratch)
    print(f"model directory: {kept} ({', '.join(MODEL_FILES)})")
    print_result(figures)
    return figures


if __name__ == "__main__":
    main()
