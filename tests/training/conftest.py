"""A small real subset of the hot-dog photos as a curated-style dataset (manifest.csv, no copies)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

LABELS = ("hot_dog", "not_hot_dog")


def write_manifest(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def subset_rows(hotdog_dir: Path, per_class: dict[str, int]) -> list[dict]:
    """Rows for the first N photos of each class per split; paths are absolute (read in place)."""
    rows = []
    for split, count in per_class.items():
        for label in LABELS:
            for path in sorted((hotdog_dir / split / label).glob("*.jpg"))[:count]:
                rows.append({"path": str(path), "label": label, "split": split})
    return rows


@pytest.fixture(scope="session")
def hotdog_subset(hotdog_dir, tmp_path_factory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("hotdog_subset"), subset_rows(hotdog_dir, {"train": 8, "val": 4}))
