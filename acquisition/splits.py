"""Leakage-free splits: deterministic, stratified by label, whole groups of similar images per split.

A group (images within `group_distance` of each other) is the unit assigned to a split, so near
copies can never sit on both sides of train/test. Within each label, groups are shuffled with the
seed and handed one by one to the split furthest below its target share; each split with a
non-zero ratio first receives one group when the label has enough, so small classes still appear
in val and test. Predefined splits (a source's own train/val) are kept as given; `leakage` counts
the duplicates that cross them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pocketml.dataset import SPLITS
from pocketml.errors import PocketMLError


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1); two numbers mean no test split."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise PocketMLError(f"--ratios {text!r} must be comma-separated numbers like 0.8,0.1,0.1") from exc
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6 or values[0] <= 0:
        raise PocketMLError(
            f"--ratios {text!r} must be train,val[,test] fractions >= 0 summing to 1 with train > 0"
        )
    return values[0], values[1], values[2]


def assign_splits(
    labels: Sequence[str],
    groups: Sequence[int],
    ratios: tuple[float, float, float],
    seed: int,
    predefined: Sequence[str | None] | None = None,
) -> list[str]:
    """A split name per item; items sharing a group always share a split.

    A group containing predefined items takes the earliest of their splits (train before val
    before test); the rest are assigned by the stratified, seeded procedure above.
    """
    if len(labels) != len(groups):
        raise ValueError("labels and groups differ in length")
    predefined = predefined or [None] * len(labels)
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    group_split: dict[int, str] = {}
    for group, items in members.items():
        given = [predefined[i] for i in items if predefined[i]]
        if given:
            group_split[group] = min(given, key=SPLITS.index)
    free = [g for g in members if g not in group_split]
    by_label: dict[str, list[int]] = defaultdict(list)
    for group in free:
        by_label[_group_label(members[group], labels)].append(group)
    rng = np.random.default_rng(seed)
    for label in sorted(by_label):
        # Sorting first makes the shuffle depend only on the seed, not on input order quirks.
        ordered = sorted(by_label[label], key=lambda g: min(members[g]))
        shuffled = [ordered[k] for k in rng.permutation(len(ordered))]
        sizes = [len(members[g]) for g in shuffled]
        for group, split in zip(shuffled, _stratified(sizes, ratios), strict=True):
            group_split[group] = split
    return [group_split[g] for g in groups]


def _group_label(items: list[int], labels: Sequence[str]) -> str:
    """The most common label in a group (ties: alphabetical), used for stratification."""
    counts = Counter(labels[i] for i in items)
    return min(counts, key=lambda lab: (-counts[lab], lab))


def _stratified(sizes: list[int], ratios: tuple[float, float, float]) -> list[str]:
    """Split per group (in the given order) so item counts follow `ratios` as closely as groups allow."""
    total = sum(sizes)
    targets = [r * total for r in ratios]
    counts = [0.0, 0.0, 0.0]
    wanted = [k for k, r in enumerate(ratios) if r > 0]
    out: list[str] = []
    for position, size in enumerate(sizes):
        if position < len(wanted) and len(sizes) >= len(wanted):
            # Seed each wanted split with one group, smallest target first, so val/test are never empty
            # when the class has enough groups to go round.
            choice = sorted(wanted, key=lambda k: (targets[k], k))[position]
        else:
            choice = max(wanted, key=lambda k: (targets[k] - counts[k], -k))
        counts[choice] += size
        out.append(SPLITS[choice])
    return out


@dataclass(frozen=True)
class Leakage:
    """Images of an evaluation split that also appear (exactly or nearly) in an earlier split."""

    exact: dict[str, int]  # split -> images with a pixel-identical copy in an earlier split
    near: dict[str, int]  # split -> images with a near copy (pHash within distance) in an earlier split
    pairs: list[tuple[int, int, str]]  # (earlier item, later item, "exact"|"near") crossing splits

    def as_dict(self, split_sizes: dict[str, int]) -> dict:
        return {
            split: {
                "images": split_sizes.get(split, 0),
                "exact_leaks": self.exact.get(split, 0),
                "near_leaks": self.near.get(split, 0),
                "leak_fraction": round(
                    (self.exact.get(split, 0) + self.near.get(split, 0)) / max(1, split_sizes.get(split, 0)),
                    4,
                ),
            }
            for split in SPLITS[1:]
            if split in split_sizes
        }


def leakage(
    splits: Sequence[str | None],
    exact_pairs: Sequence[tuple[int, int]],
    near_pairs: Sequence[tuple[int, int]],
) -> Leakage:
    """Count later-split images that have a copy in an earlier split (train < val < test).

    An image with both an exact and a near copy counts as exact; each image is counted once.
    """
    exact_hit: dict[str, set[int]] = defaultdict(set)
    near_hit: dict[str, set[int]] = defaultdict(set)
    crossing: list[tuple[int, int, str]] = []
    for kind, pairs, hit in (("exact", exact_pairs, exact_hit), ("near", near_pairs, near_hit)):
        for a, b in pairs:
            sa, sb = splits[a], splits[b]
            if not sa or not sb or sa == sb:
                continue
            early, late = (a, b) if SPLITS.index(sa) < SPLITS.index(sb) else (b, a)
            hit[splits[late]].add(late)
            crossing.append((early, late, kind))
    for split, items in near_hit.items():
        items -= exact_hit.get(split, set())
    return Leakage(
        exact={s: len(v) for s, v in exact_hit.items() if v},
        near={s: len(v) for s, v in near_hit.items() if v},
        pairs=crossing,
    )


def empty_classes(
    labels: Sequence[str], splits: Sequence[str], ratios: tuple[float, float, float]
) -> list[str]:
    """Warnings for each label that has no image in a split whose ratio is above zero."""
    present = {(lab, s) for lab, s in zip(labels, splits, strict=True)}
    out = []
    for label in sorted(set(labels)):
        for split, ratio in zip(SPLITS, ratios, strict=True):
            if ratio > 0 and (label, split) not in present:
                count = sum(1 for lab in labels if lab == label)
                out.append(
                    f"class {label!r} has no images in {split} ({count} kept in all, too few groups for ratios {ratios})"
                )
    return out
