from collections import Counter, defaultdict

import numpy as np
import pytest
from pocketml.acquisition import splits

from pocketml.errors import PocketMLError


def _random_items(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Labels (70/30 imbalance) and groups of 1-5 items that share a label."""
    rng = np.random.default_rng(seed)
    labels, groups, group = [], [], 0
    while len(labels) < n:
        size = int(rng.integers(1, 6))
        label = "cat" if rng.random() < 0.7 else "dog"
        labels += [label] * size
        groups += [group] * size
        group += 1
    return labels, groups


def test_groups_never_cross_splits():
    labels, groups = _random_items(2000, seed=1)
    assigned = splits.assign_splits(labels, groups, (0.7, 0.2, 0.1), seed=5)
    per_group = defaultdict(set)
    for group, split in zip(groups, assigned, strict=True):
        per_group[group].add(split)
    assert all(len(s) == 1 for s in per_group.values())


def test_splits_are_stratified_per_label():
    labels, groups = _random_items(3000, seed=2)
    assigned = splits.assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=0)
    for label in ("cat", "dog"):
        counts = Counter(s for lab, s in zip(labels, assigned, strict=True) if lab == label)
        total = sum(counts.values())
        assert counts["train"] / total == pytest.approx(0.8, abs=0.01)
        assert counts["val"] / total == pytest.approx(0.1, abs=0.01)
        assert counts["test"] / total == pytest.approx(0.1, abs=0.01)


def test_same_seed_same_splits_and_another_seed_differs():
    labels, groups = _random_items(500, seed=3)
    first = splits.assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=11)
    assert splits.assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=11) == first
    assert splits.assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=12) != first


def test_small_class_still_gets_val_and_test_when_it_has_three_groups():
    labels = ["rare"] * 3 + ["common"] * 40
    groups = list(range(43))
    assigned = splits.assign_splits(labels, groups, (0.8, 0.1, 0.1), seed=0)
    assert sorted(s for lab, s in zip(labels, assigned, strict=True) if lab == "rare") == [
        "test",
        "train",
        "val",
    ]
    assert splits.empty_classes(labels, assigned, (0.8, 0.1, 0.1)) == []


def test_class_too_small_for_the_ratios_is_named_in_a_warning():
    labels = ["rare"] * 2 + ["common"] * 40
    assigned = splits.assign_splits(labels, list(range(42)), (0.8, 0.1, 0.1), seed=0)
    warnings = splits.empty_classes(labels, assigned, (0.8, 0.1, 0.1))
    assert warnings and all("'rare'" in w for w in warnings)


def test_predefined_splits_are_kept_and_a_group_joins_its_earliest_split():
    labels = ["a", "a", "a", "b", "b"]
    groups = [0, 0, 1, 2, 3]
    predefined = ["val", "train", "test", None, None]
    assigned = splits.assign_splits(labels, groups, (0.5, 0.5, 0.0), seed=0, predefined=predefined)
    assert assigned[:3] == ["train", "train", "test"]


def test_leakage_counts_each_later_split_image_once_and_exact_before_near():
    item_splits = ["train", "train", "val", "val", "test", "test"]
    exact = [(0, 2)]
    near = [(1, 2), (0, 3), (3, 4), (4, 5)]  # 4 and 5 are both test: no leak between them
    leak = splits.leakage(item_splits, exact, near)
    assert leak.exact == {"val": 1}
    assert leak.near == {"val": 1, "test": 1}
    table = leak.as_dict({"train": 2, "val": 2, "test": 2})
    assert table["val"]["leak_fraction"] == 1.0 and table["test"]["near_leaks"] == 1


def test_ratio_strings_are_parsed_and_bad_ones_rejected():
    assert splits.parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert splits.parse_ratios("0.7,0.3") == (0.7, 0.3, 0.0)
    for bad in ("0.5,0.1,0.1", "a,b,c", "0,0.5,0.5", "0.9,-0.1,0.2"):
        with pytest.raises(PocketMLError, match="ratios"):
            splits.parse_ratios(bad)
