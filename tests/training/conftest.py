"""Datasets for training tests, built from the real photos every clone has (tests/photos.py):
curated-style manifests over a chosen subset of `photos_dir`, read in place (no copies)."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.models import PHOTO_LABELS

LABELS = PHOTO_LABELS  # ("cat", "coffee")


def write_manifest(root: Path, rows: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def subset_rows(photos_dir: Path, per_class: dict[str, int], labels: tuple[str, ...] = LABELS) -> list[dict]:
    """Rows for the first N photos of each class per split; paths are absolute (read in place)."""
    rows = []
    for split, count in per_class.items():
        for label in labels:
            for path in sorted((photos_dir / split / label).glob("*.jpg"))[:count]:
                rows.append({"path": str(path), "label": label, "split": split})
    return rows
