"""Build small pools and ImageFolders from generated real photos (photo_set.py) for the curation tests.

Written directly (images + pool.csv in acquisition's layout) so these tests do not depend on the
acquisition code.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from pocketml.acquisition.pool import POOL_COLUMNS

from tests.acquisition.photo_set import photos_of


def reencoded(path: Path, quality: int = 60, scale: float = 1.0) -> bytes:
    """The same photo re-encoded as JPEG (optionally resized): different bytes, same picture."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if scale != 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()


def as_png(path: Path) -> bytes:
    """The decoded pixels of a photo saved losslessly: different bytes, identical pixels."""
    with Image.open(path) as img:
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()


@dataclass
class Pool:
    root: Path
    rows: list[dict] = field(default_factory=list)

    def add(
        self, data: bytes, label: str, suffix: str = ".jpg", source_url: str = "", split: str = ""
    ) -> str:
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{sha[:2]}/{sha}{suffix}"
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / rel).write_bytes(data)
        row = {"sha256": sha, "path": rel, "label": label, "source": "test", "source_url": source_url or rel}
        row.update(width="", height="")
        if split:
            row["split"] = split
        self.rows.append(row)
        return sha

    def write(self) -> Path:
        columns = list(POOL_COLUMNS)
        with open(self.root / "pool.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        return self.root


def photo_pool(root: Path, photo_folder: Path, per_class: int = 12) -> tuple[Path, dict[str, str]]:
    """A pool of real photos plus planted trouble; returns (dataset dir, {what: sha256 of the plant})."""
    pool = Pool(root)
    hot = photos_of(photo_folder, "cat", per_class + 1)
    other = photos_of(photo_folder, "coffee", per_class)
    originals = {}
    for path in hot[:per_class]:
        originals[path] = pool.add(path.read_bytes(), "cat")
    for path in other:
        originals[path] = pool.add(path.read_bytes(), "coffee")
    planted = {
        "exact_of": originals[hot[0]],
        "exact": pool.add(as_png(hot[0]), "cat", ".png"),
        "near_of": originals[hot[1]],
        "near": pool.add(reencoded(hot[1], quality=50, scale=0.6), "cat"),
        "conflict_a": pool.add(hot[per_class].read_bytes(), "cat"),
        "conflict_b": pool.add(reencoded(hot[per_class], quality=70), "coffee"),
        "unreadable": pool.add(b"\xff\xd8\xff\xe0 this is not really a jpeg", "cat"),
        "tiny": pool.add(reencoded(other[0], scale=0.2), "coffee"),
    }
    return pool.write(), planted


def image_folder(root: Path, photo_folder: Path, per_class: int = 10) -> Path:
    """ROOT/{train,val}/{label}/*.jpg copied from the real photos."""
    for split in ("train", "val"):
        for label in ("cat", "coffee"):
            out = root / split / label
            out.mkdir(parents=True)
            for path in photos_of(photo_folder, label, per_class, split):
                (out / path.name).write_bytes(path.read_bytes())
    return root
