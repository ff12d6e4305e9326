"""How close an artifact must stay to the Keras original, by precision: the one budget every verdict
(export, validate, the quantisation ladders, bench on a device) is decided against.

Two kinds of figure, decided two ways (README "How a file is judged" has the measurements):
- How far a file moves probabilities (fp32, fp16). A correct file's largest |dp| is rounding error
  and grows only slowly with the number of images (a max of near-Gaussian errors: about x1.4 from 50
  to 2,000 images), so the budget is a max with a bound calibrated on known-good files, with room for
  that growth, plus a bound on the mean (stable in n) that a broken file cannot hide under.
- How often it changes the decision (every precision). A flip on an image the Keras model itself
  decides by less than the precision may move a probability (its margin, top-1 minus top-2, below
  `ambiguous_margin`) is a near-tie: reported, not counted. For fp32 and fp16 a counted flip fails
  the file outright. For quantised files the agreement over the other images is a rate, and its
  95 % Wilson interval decides: wholly above the line, passed; wholly below, failed; across it,
  "too few images", with the number of images that would decide it.
Accuracy is measured on the labelled held-out images only (usually few). A file cannot lose more
accuracy than the decisions it changes, so agreement decides a pass; accuracy fails a file only
when its held-out loss is shown (the whole interval) above max_accuracy_drop.
"""

from __future__ import annotations

from dataclasses import dataclass

from pocketml.artifact import (
    FAILED,
    PASSED,
    PRECISIONS,
    TOO_FEW,
    Parity,
    agreement_interval,
    images_to_decide,
)
from pocketml.errors import PocketMLError


@dataclass(frozen=True)
class Tolerance:
    max_abs_diff: float | None = None  # largest |p_artifact - p_keras| allowed on any image and class
    max_mean_abs_diff: float | None = None  # largest mean |dp| over every image and class
    ambiguous_margin: float = 0.0  # what the precision may move a probability: flips on closer calls are ambiguous
    min_agreement: float = 1.0  # line for agreement on the images Keras decides clearly; 1.0: no such flip at all
    max_accuracy_drop: float | None = None  # accuracy loss vs Keras, in points, that fails a file once shown

    def __post_init__(self) -> None:
        for name in ("max_abs_diff", "max_mean_abs_diff", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise PocketMLError(f"tolerance {name} = {value} must be >= 0")
        if not 0 <= self.min_agreement <= 1:
            raise PocketMLError(f"tolerance min_agreement = {self.min_agreement} must be in [0, 1]")

    def describe(self) -> str:
        """The budget in words (the ladders' record, the README)."""
        parts = []
        if self.max_abs_diff is not None:
            parts.append(f"max|dp| <= {self.max_abs_diff:g}")
        if self.max_mean_abs_diff is not None:
            parts.append(f"mean|dp| <= {self.max_mean_abs_diff:g}")
        if self.min_agreement >= 1:
            parts.append(f"no flip where Keras' margin is >= {self.ambiguous_margin:g}")
        else:
            parts.append(f"95 % interval of top-1 agreement >= {self.min_agreement:g} (flips where Keras' margin "
                         f"is < {self.ambiguous_margin:g} are ambiguous, not counted)")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy loss not shown above {self.max_accuracy_drop:g} point on the held-out images")
        return "; ".join(parts)


# Measured on known-good files (README "How a file is judged"): fp16 moved a probability by at most
# 0.041 on 50 hot-dog photos and 0.039 on 298 test photos, mean |dp| 0.0007-0.0015; int8 files that
# keep every clear decision moved one by up to 0.19 (the demo's full-integer TFLite file, fold.py).
_QUANTISED = Tolerance(ambiguous_margin=0.2, min_agreement=0.97, max_accuracy_drop=1.0)
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4, ambiguous_margin=1e-4, max_accuracy_drop=1.0),
    "fp16": Tolerance(max_abs_diff=0.1, max_mean_abs_diff=0.01, ambiguous_margin=0.1, max_accuracy_drop=1.0),
    "int8-dynamic": _QUANTISED,
    "int8": _QUANTISED,
    "int8-uint8io": _QUANTISED,
    "int8-weights": _QUANTISED,
    "palettized-6bit": _QUANTISED,
    "compressed": _QUANTISED,
}
assert set(TOLERANCES) == set(PRECISIONS), "every precision needs a tolerance"


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance of `precision`; int8-*/palettized-* variants not listed fall back to the quantised rule."""
    if precision in TOLERANCES:
        return TOLERANCES[precision]
    if precision.startswith(("int8", "palettized")):
        return _QUANTISED
    raise PocketMLError(f"no tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")


@dataclass(frozen=True)
class Decision:
    status: str  # PASSED | FAILED | TOO_FEW
    reasons: tuple[str, ...]  # why failed, or why undecided
    images_needed: int | None = None


def counted_agreement(parity: Parity) -> tuple[int, int]:
    """(agreeing, judged) over the images the budget counts: every image but the ambiguous flips."""
    ambiguous = parity.ambiguous_flips or 0
    judged = parity.images - ambiguous
    return judged - ((parity.flips or 0) - ambiguous), judged


def decide(precision: str, parity: Parity) -> Decision:
    """The verdict on `parity`'s figures under the budget of `precision`."""
    tol = tolerance_for(precision)
    failed, open_ = [], []
    needed = None
    if tol.max_abs_diff is not None and parity.max_abs_diff is not None and parity.max_abs_diff > tol.max_abs_diff:
        failed.append(f"max|dp| {parity.max_abs_diff:.3g} > {tol.max_abs_diff:g}")
    if tol.max_mean_abs_diff is not None and parity.mean_abs_diff is not None and parity.mean_abs_diff > tol.max_mean_abs_diff:
        failed.append(f"mean|dp| {parity.mean_abs_diff:.3g} > {tol.max_mean_abs_diff:g}")
    agreeing, judged = counted_agreement(parity)
    counted = judged - agreeing
    ambiguous = f", {parity.ambiguous_flips} ambiguous not counted" if parity.ambiguous_flips else ""
    if tol.min_agreement >= 1:
        if counted:
            failed.append(f"{counted} of {judged} images flipped where Keras' margin is >= {tol.ambiguous_margin:g}"
                          + (f" ({ambiguous[2:]})" if ambiguous else ""))
    elif judged:
        low, high = agreement_interval(agreeing, judged)
        said = (f"agreement {agreeing}/{judged} ({counted} flips{ambiguous}), 95 % interval {low:.4f}-{high:.4f}")
        if high < tol.min_agreement:
            failed.append(f"{said} is below {tol.min_agreement:g}")
        elif low < tol.min_agreement:
            needed = images_to_decide(agreeing / judged, tol.min_agreement)
            about = f"; about {needed} images would decide" if needed else ""
            open_.append(f"{said} straddles {tol.min_agreement:g}{about}")
    drop = parity.accuracy_drop_points
    if tol.max_accuracy_drop is not None and drop is not None and drop > tol.max_accuracy_drop and parity.held_out_images:
        lost = round(drop * parity.held_out_images / 100)
        low, _ = agreement_interval(lost, parity.held_out_images)
        if 100 * low > tol.max_accuracy_drop:
            failed.append(f"accuracy drop {drop:.2f} points ({lost} of {parity.held_out_images} held-out images), "
                          f"at least {100 * low:.2f} at 95 % > {tol.max_accuracy_drop:g}")
    if failed:
        return Decision(FAILED, tuple(failed))
    if open_:
        return Decision(TOO_FEW, tuple(open_), needed)
    return Decision(PASSED, ())
