"""The [curate] section: duplicates, label conflicts, quality flags, splits, report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pocketml.configs.acquire import executor_problem

GROUP_DISTANCE = 10  # pHash bits within which images share a split, unless near_distance is larger
QUALITY_FLAGS = ("dark", "bright", "blurry", "low_info", "grayscale", "aspect", "tiny")


@dataclass
class CurateConfig:
    seed: int = 0  # shuffles the split assignment; same seed + same pool = same splits
    ratios: tuple[float, float, float] = (
        0.8,
        0.1,
        0.1,
    )  # train, val, test fractions (sum to 1; test may be 0)
    # pHash Hamming distance (bits of 64) at or below which two images are near duplicates and one is removed;
    # re-encodes and resizes land at 0-4, distinct photos of the same scene usually above 12.
    near_distance: int = 6
    # Images this close (bits, >= near_distance) are kept but forced into one split, so a burst of similar
    # shots cannot sit on both sides of train/test. Unset: 10, or near_distance when that is larger.
    group_distance: int | None = None
    # Also require dHash within this many bits for a near duplicate (None: pHash alone decides). A second,
    # differently built hash cuts false matches between distinct photos with similar layouts.
    dhash_distance: int | None = None
    # Same or near-same image under two labels: "drop" removes the whole cluster, "majority" keeps the
    # label most of its members carry (ties are dropped).
    conflict_policy: Literal["drop", "majority"] = "drop"
    # Quality flags whose images are left out of the manifest (the rest are only recorded in `flags`).
    exclude_flags: list[str] = field(default_factory=lambda: ["tiny", "low_info"])
    dark_below: float = 30.0  # mean luminance 0..255 under which an image is "dark"
    bright_above: float = 225.0  # mean luminance 0..255 over which an image is "bright"
    blur_below: float = 60.0  # variance of the Laplacian (on a 256-px grey copy) under which it is "blurry"
    low_info_below: float = 3.0  # entropy in bits of the grey histogram under which it is "low_info"
    grayscale_below: float = 4.0  # mean |channel difference| 0..255 under which it is "grayscale"
    max_aspect: float = 3.0  # long side / short side over which it is "aspect"
    min_side: int = 64  # pixels; a shorter side makes it "tiny"
    workers: int = 0  # processes that decode and hash images; 0 = one per CPU core (ray, no address: its CPUs)
    # local: this machine | ray: decoding and the near-duplicate search run on a Ray cluster, reading the
    # dataset directory at the same path on every node (a shared filesystem)
    executor: str = "local"
    ray_address: str = ""  # Ray cluster to join ("HOST:6379", "ray://HOST:10001"); empty starts a local instance
    baseline_size: int = 16  # side in pixels of the downsampled images the sanity baseline trains on
    contact_sheet_max: int = 64  # thumbnails per class on a contact sheet
    contact_sheet_thumb: int = 96  # pixels per contact-sheet thumbnail side

    def __post_init__(self) -> None:
        problem = executor_problem(self.executor, self.ray_address)
        if problem:
            raise ValueError(problem)
        if self.workers < 0:
            raise ValueError(f"workers = {self.workers} must be >= 0 (0: one per CPU core)")
        unknown = [f for f in self.exclude_flags if f not in QUALITY_FLAGS]
        if unknown:
            raise ValueError(
                f"exclude_flags {unknown} are not quality flags; accepted: {', '.join(QUALITY_FLAGS)}"
            )
        ratios = tuple(float(r) for r in self.ratios)
        if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
            raise ValueError(
                f"ratios {self.ratios} must be three non-negative fractions (train, val, test) summing to 1 with train > 0"
            )
        self.ratios = ratios
        if self.dhash_distance is not None and not 0 <= self.dhash_distance <= 64:
            raise ValueError(f"dhash_distance {self.dhash_distance} must be within 0..64 bits, or left out")
        if self.group_distance is None:
            self.group_distance = max(GROUP_DISTANCE, self.near_distance)
        if not 0 <= self.near_distance <= 64 or not self.near_distance <= self.group_distance <= 64:
            raise ValueError(
                f"near_distance {self.near_distance} and group_distance {self.group_distance} must satisfy "
                "0 <= near_distance <= group_distance <= 64 (bits of a 64-bit pHash)"
            )
