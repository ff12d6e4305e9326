"""The recovery ladder, the same for every format: try candidate files in a fixed order, judge each on
the held-out evaluation images (export.judge.Judge: never the calibration images), stop at the first
within budget, and record every step tried with its figures, so a user sees why the file is what it is.

The order is fixed before anything is judged (cheapest, most integer first), so the search is a
bounded walk down a ladder, not a hunt over the evaluation set: at most MAX_STEPS candidates and
MAX_SECONDS of search per file. Each rung gets the file's own verdict (passed / failed / too few
images, export/tolerances.py). When no rung passes, the first rung the images could not decide is
kept (its verdict says "too few images"), else the closest (fewest counted flips, then the smallest
accuracy drop), and its verdict says it failed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pocketml import latency
from pocketml.artifact import FAILED, PASSED, TOO_FEW, Parity
from pocketml.errors import reason_of
from pocketml.fsutil import tree_bytes

MAX_STEPS = 8  # candidates judged at most per file: each costs a conversion and an evaluation
MAX_SECONDS = 240.0  # search time per file; a step that starts after it is recorded as not tried
TIMED_RUNS = 40  # batch-1 calls timed per candidate (after WARMUP_RUNS): enough for a stable median
WARMUP_RUNS = 5
TIMED_SECONDS = 0.5  # ...or fewer calls when a slow candidate has used this long


@dataclass
class Built:
    """What building a candidate file says about it, besides the file itself."""

    integer_only: bool | None  # every op runs in integers (NPU / DSP / Edge TPU); None: weights only compressed
    float_ops: list[str] = field(default_factory=list)  # ops kept in float, by name
    notes: list[str] = field(default_factory=list)
    activation_bits: int | None = None  # widest integer activation the file computes with (8, or 16 for 16x8)


@dataclass
class Candidate:
    """One rung of a ladder: a name, the settings that make it, and how to write it to a path."""

    step: str  # e.g. "minmax", "bias-corrected", "float 2", "int16x8"
    settings: dict
    build: Callable[[Path], Built]


@dataclass
class Step:
    """A rung as tried: the judge's figures, speed at one thread, size, and the time it took."""

    step: str
    settings: dict
    status: str  # passed | failed | too few images | error | not tried
    reason: str | None = None
    top1_agreement: float | None = None
    flips: int | None = None  # on every judged image; held_out_flips of them on the held-out split
    ambiguous_flips: int | None = None  # flips on near-ties of Keras: reported, not counted
    images: int | None = None
    held_out_flips: int | None = None
    held_out_images: int | None = None
    agreement_low: float | None = None  # 95 % interval of the counted agreement (Wilson)
    accuracy_drop_points: float | None = None
    max_abs_diff: float | None = None
    latency_ms_1_thread: float | None = None  # p50, batch 1
    bytes: int | None = None
    integer_only: bool | None = None
    float_ops: list[str] = field(default_factory=list)
    seconds: float | None = None  # building + judging + timing this rung

    def to_dict(self) -> dict:
        data = asdict(self)
        data["float_ops_count"] = len(self.float_ops)
        data["float_ops"] = self.float_ops[:20]  # the manifest stays readable; the count says how many
        return data


@dataclass
class Outcome:
    """The rung a search settled on (its file at `path`) and the whole ladder."""

    chosen: Step | None
    path: Path | None
    steps: list[Step]
    built: Built | None
    seconds: float

    def verdict_words(self) -> str:
        """What the search settled on, in words, for the export's note."""
        status = self.chosen.status if self.chosen else None
        if status == PASSED:
            return "within budget"
        if status == TOO_FEW:
            return "no rung shown within budget; kept the first the images could not decide (too few images)"
        return "no rung within budget; kept the closest"

    def details(self, precision: str, sensitivity: list[dict] | None = None, **extra: Any) -> dict:
        """The manifest's record of the search: what the file is, every step, the worst layers."""
        from pocketml.export.tolerances import tolerance_for

        chosen = self.chosen
        return {
            "search": {
                "chosen": chosen.step if chosen else None,
                "passed": bool(chosen and chosen.status == PASSED),
                "verdict": chosen.status if chosen else None,
                "seconds": round(self.seconds, 2),
                "budget": tolerance_for(precision).describe(),
                "ladder": [s.to_dict() for s in self.steps],
            },
            "integer_only": self.built.integer_only if self.built else None,
            "float_ops": self.built.float_ops if self.built else [],
            "activation_bits": self.built.activation_bits if self.built else None,
            "sensitivity": sensitivity or [],
            **extra,
        }


def worst_note(name: str, sensitivity: list[dict], count: int = 3) -> str | None:
    """'tflite int8: worst layers block0_dw_relu_1/Relu6 (2.83), ...' from a sensitivity table."""
    if not sensitivity:
        return None
    parts = []
    for row in sensitivity[:count]:
        label, value = list(row.values())[0], [v for v in row.values() if isinstance(v, float)]
        parts.append(f"{label} ({value[0]:.3g})" if value else str(label))
    return f"{name}: most sensitive: {', '.join(parts)}"


def latency_ms(module: ModuleType, path: Path, image: np.ndarray) -> float | None:
    """p50 of batch-1 calls at one thread, set up by the format's own Predictor (None: not timeable here)."""
    if module.latency_unavailable() is not None:
        return None
    call = module.load(path, threads=1).invoker(image[None])
    figures = latency.measure(call, min_time_s=TIMED_SECONDS, min_runs=5, max_runs=TIMED_RUNS,
                              warmup_runs=WARMUP_RUNS, block_runs=TIMED_RUNS, bare=False)
    return round(figures["p50_ms"], 4)


def _closeness(step: Step) -> tuple:
    """Sort key: the rung closest to passing (fewest counted flips, smallest drop, then fastest)."""
    drop = step.accuracy_drop_points if step.accuracy_drop_points is not None else 0.0
    counted = step.flips - (step.ambiguous_flips or 0) if step.flips is not None else 1 << 30
    return (counted, drop, step.latency_ms_1_thread or 0.0)


def run_ladder(
    module: ModuleType,
    precision: str,
    candidates: Iterable[Candidate],
    judge: Any,
    work_dir: Path,
    max_steps: int = MAX_STEPS,
    max_seconds: float = MAX_SECONDS,
    precheck: Callable[[Step], str | None] | None = None,
) -> Outcome:
    """Walk `candidates` (built lazily, in order) until one passes `judge` for `precision`.

    `precheck` adds a format's own condition, checked on the built file before it is judged (Core ML's
    size goal): it returns why the rung is not taken, or None. Every candidate's file is written under
    `work_dir`.
    """
    started = time.perf_counter()
    steps: list[Step] = []
    tried: list[tuple[Step, Path, Built]] = []
    iterator: Iterator[Candidate] = iter(candidates)
    for index, candidate in enumerate(iterator):
        if index >= max_steps or time.perf_counter() - started > max_seconds:
            limit = f"{max_steps} steps" if index >= max_steps else f"{max_seconds:g} s"
            steps.append(Step(candidate.step, candidate.settings, "not tried", f"search bounded at {limit}"))
            steps.extend(Step(c.step, c.settings, "not tried", f"search bounded at {limit}") for c in iterator)
            break
        step, path, built = _try(module, precision, candidate, judge, work_dir / f"step{index}{module.SUFFIX}", precheck)
        steps.append(step)
        if built is not None:
            tried.append((step, path, built))
        if step.status == PASSED:
            return Outcome(step, path, steps, built, time.perf_counter() - started)
    if not tried:
        return Outcome(None, None, steps, None, time.perf_counter() - started)
    undecided = [item for item in tried if item[0].status == TOO_FEW]
    step, path, built = undecided[0] if undecided else min(tried, key=lambda item: _closeness(item[0]))
    return Outcome(step, path, steps, built, time.perf_counter() - started)


def _try(module, precision, candidate, judge, path, precheck) -> tuple[Step, Path, Built | None]:
    start = time.perf_counter()
    step = Step(candidate.step, dict(candidate.settings), "error")
    try:
        built = candidate.build(path)
        step.bytes = tree_bytes(path)
        why = precheck(step) if precheck is not None else None
        if why:
            step.status, step.reason = FAILED, f"not judged: {why}"
            step.seconds = round(time.perf_counter() - start, 2)
            return step, path, None
        probs = module.load(path).predict(judge.images)
    except Exception as exc:  # a rung whose converter or runtime fails is recorded; the next rung goes on
        step.reason = reason_of(exc)
        step.seconds = round(time.perf_counter() - start, 2)
        return step, path, None
    parity: Parity = judge.parity(precision, probs)
    step.status, step.reason = parity.status, parity.reason
    step.top1_agreement, step.flips, step.images = parity.top1_agreement, parity.flips, parity.images
    step.ambiguous_flips, step.held_out_flips = parity.ambiguous_flips, parity.held_out_flips
    step.held_out_images = parity.held_out_images
    step.agreement_low, step.max_abs_diff = parity.agreement_low, parity.max_abs_diff
    step.accuracy_drop_points = parity.accuracy_drop_points
    step.integer_only, step.float_ops = built.integer_only, list(built.float_ops)
    step.latency_ms_1_thread = latency_ms(module, path, judge.images[0])
    step.seconds = round(time.perf_counter() - start, 2)
    return step, path, built


def move_into_place(path: Path, out_path: Path) -> None:
    """Move the chosen candidate's file (or package directory) to `out_path`, replacing what is there."""
    out_path = Path(out_path)
    if out_path.is_dir():
        shutil.rmtree(out_path)
    elif out_path.exists():
        out_path.unlink()
    shutil.move(str(path), str(out_path))
