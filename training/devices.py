"""Which Keras backend trains, on which devices, at which precision and batch size.

Keras fixes its backend when it is first imported in a process, so the backend is decided here
before anything imports keras: `process_backend()` is what this process has (or will get), and a
training that wants another one runs in a subprocess (training.backend_process).

`device_plan` then turns a TrainConfig into a `DevicePlan` for the devices the backend sees:
- precision: float32 on CPUs; bf16 mixed precision on GPUs that have bf16 tensor cores (compute
  capability 8.0+) and on TPUs; fp16 mixed (with loss scaling) on older tensor-core GPUs;
- data parallelism over every accelerator of the host: keras.distribution.DataParallel on JAX
  (the Keras 3 multi-device API), tf.distribute.MirroredStrategy on TensorFlow;
- the batch per step: `batch_size` on a CPU, `device_batch_size` per accelerator, never so large
  that an epoch has fewer than MIN_STEPS_PER_EPOCH steps; phase 2's learning rate grows with the
  square root of the batch (the rule that suits Adam; linear scaling overshoots it).

Backend modules (jax, tensorflow) are imported only inside the function for that backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from pocketml.configs.train import BACKENDS
from pocketml.errors import PocketMLError

DEFAULT_BACKEND = "tensorflow"  # Keras' own default; the CPU default of pocketml
ACCELERATOR_BATCH = 256  # images per step per GPU/TPU when device_batch_size is 0 (auto)
MIN_STEPS_PER_EPOCH = 8  # a device batch never shrinks an epoch below this many optimiser steps
BF16_COMPUTE_CAPABILITY = 8.0  # NVIDIA Ampere and newer have bf16 tensor cores
FP16_COMPUTE_CAPABILITY = 7.0  # Volta and Turing: fp16 tensor cores only


def configured_backend() -> str:
    """The backend `import keras` would pick in this process: KERAS_BACKEND, else keras.json, else TF."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return json.loads((home / "keras.json").read_text()).get("backend", DEFAULT_BACKEND)
    except (OSError, ValueError, AttributeError):
        return DEFAULT_BACKEND


def process_backend() -> str:
    """The backend of this process: keras' own once imported, else the one it will import with."""
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    return configured_backend()


def resolve_backend(name: str) -> str:
    """`train.backend` ("auto" or a name) as the backend that will train, checked to be usable."""
    backend = process_backend() if name == "auto" else name
    if backend not in BACKENDS:
        raise PocketMLError(f"Keras backend {backend!r} cannot train here; accepted: auto, {', '.join(BACKENDS)}")
    if backend == "jax":
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise PocketMLError(
                "backend jax needs JAX: pip install 'pocketml[gpu]' (JAX with CUDA) or 'jax' (CPU only)"
            )
    return backend


@dataclass(frozen=True)
class Devices:
    """What the backend sees: platform, accelerator count and names, and bf16/fp16 support."""

    platform: str  # cpu | gpu | tpu
    count: int  # devices of that platform visible to this process
    kind: str  # e.g. "NVIDIA H200", "cpu"
    compute_capability: float | None = None  # NVIDIA GPUs only

    def default_precision(self) -> str:
        if self.platform == "tpu":
            return "mixed_bfloat16"
        if self.platform != "gpu":
            return "float32"
        capability = self.compute_capability
        if capability is None or capability >= BF16_COMPUTE_CAPABILITY:
            return "mixed_bfloat16"  # unknown: a non-NVIDIA GPU (ROCm MI200+ has bf16)
        return "mixed_float16" if capability >= FP16_COMPUTE_CAPABILITY else "float32"


@dataclass
class DevicePlan:
    """How one training run uses its devices; recorded in the model directory's training.json."""

    backend: str
    platform: str
    devices: int  # devices the data is split across (1: no data parallelism)
    kind: str
    precision: str  # the Keras dtype policy phase 1's features and phase 2 run under
    batch_size: int  # images per step across all devices (phase-1 features and phase 2)
    lr_scale: float  # factor on lr_finetune for that batch
    loader_workers: int  # threads serving batches
    distribution: str  # none | DataParallel | MirroredStrategy
    _strategy: object = field(default=None, repr=False, compare=False)

    @property
    def mixed(self) -> bool:
        return self.precision != "float32"

    def record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    @contextlib.contextmanager
    def scope(self):
        """Precision policy and data parallelism active inside; the previous ones restored after."""
        import keras

        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.precision)
        try:
            with self._distribution_scope():
                yield self
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def _distribution_scope(self):
        if self._strategy is None:
            return contextlib.nullcontext()
        return self._strategy.scope()


def scaled_batch(config, devices: Devices, train_images: int) -> int:
    """Images per step across `devices.count` devices, a multiple of the count."""
    count = devices.count
    if devices.platform == "cpu":
        wanted = config.batch_size  # CPU "devices" split one processor: the work per step stays the same
    else:
        wanted = (config.device_batch_size or ACCELERATOR_BATCH) * count
    if not config.steps_per_epoch and wanted > config.batch_size:
        # A big device batch on a small dataset would leave few optimiser steps per epoch.
        wanted = max(config.batch_size, min(wanted, train_images // MIN_STEPS_PER_EPOCH))
    return max(count, math.ceil(wanted / count) * count)


def lr_scale(config, batch: int) -> float:
    return math.sqrt(batch / config.batch_size) if config.scale_lr else 1.0


def device_plan(config, train_images: int) -> DevicePlan:
    """The plan for training `train_images` images with `config` on this process's backend."""
    import keras

    backend = keras.backend.backend()
    probe = {"jax": _jax_devices, "tensorflow": _tensorflow_devices}[backend]
    devices, make_strategy = probe(config.devices)
    precision = devices.default_precision() if config.precision == "auto" else config.precision
    batch = scaled_batch(config, devices, train_images)
    strategy = make_strategy() if devices.count > 1 else None
    return DevicePlan(
        backend=backend,
        platform=devices.platform,
        devices=devices.count,
        kind=devices.kind,
        precision=precision,
        batch_size=batch,
        lr_scale=lr_scale(config, batch),
        loader_workers=config.loader_workers or max(2, min(8, os.cpu_count() or 1)),
        distribution="none" if strategy is None else type(strategy).__name__,
        _strategy=strategy,
    )


def _jax_devices(wanted: int):
    import jax
    import keras

    platform = jax.default_backend()  # the best platform present: gpu/tpu over cpu
    visible = jax.devices(platform)
    chosen = visible[: wanted or len(visible)]
    capability = getattr(chosen[0], "compute_capability", None)
    devices = Devices(
        platform=platform,
        count=len(chosen),
        kind=getattr(chosen[0], "device_kind", platform),
        compute_capability=float(capability) if capability else None,
    )
    # Each step's batch is sharded along its first axis; the weights are replicated on every device.
    return devices, lambda: keras.distribution.DataParallel(devices=chosen)


def _tensorflow_devices(wanted: int):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return Devices("cpu", 1, "cpu"), lambda: None
    chosen = gpus[: wanted or len(gpus)]
    details = tf.config.experimental.get_device_details(chosen[0])
    capability = details.get("compute_capability")
    devices = Devices(
        platform="gpu",
        count=len(chosen),
        kind=details.get("device_name", "gpu"),
        compute_capability=float(f"{capability[0]}.{capability[1]}") if capability else None,
    )
    names = [f"/gpu:{i}" for i in range(len(chosen))]
    return devices, lambda: tf.distribute.MirroredStrategy(names)


def weight_replicas(model, plan: DevicePlan) -> int:
    """On how many devices the model's weights live (what data parallelism actually did)."""
    if plan.backend == "jax":
        return len(model.weights[0].value.sharding.device_set)
    return plan._strategy.num_replicas_in_sync if plan._strategy is not None else 1


@contextlib.contextmanager
def tensorflow_left_out():
    """Inside, Keras on a non-TensorFlow backend does not import TensorFlow.

    Keras asks `tf.available` (which imports TensorFlow whenever it is installed) in places that
    matter only when TensorFlow objects exist: seeding TensorFlow's RNG, recognising a
    tf.TensorShape while saving a model. While TensorFlow is not imported no such object can
    exist, so for the duration Keras is told it is absent. TensorFlow's own backend, or a process
    that already imported it, is left as it is.
    """
    import keras
    from keras.src.utils import module_utils

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    lazy = module_utils.tensorflow
    saved = lazy._available
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = saved


def seed_everything(seed: int) -> None:
    """Python, NumPy, Keras (and, on its backend, TensorFlow) seeds."""
    import keras

    with tensorflow_left_out():
        keras.utils.set_random_seed(seed)
