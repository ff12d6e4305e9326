"""Content-addressed image store: `images/<sha[:2]>/<sha>.jpg`, each file written atomically.

The name is the sha256 of the stored bytes, so writing the same image twice is a no-op and a
file's name proves its content. A kill -9 mid-write leaves only a hidden `.tmp` file, which the
next run removes (`remove_partials`); no half image ever has a real name.
"""

from __future__ import annotations

from pathlib import Path

from pocketml.fsutil import atomic_write_bytes, sha256_bytes

IMAGES_DIR = "images"
EXTENSION = ".jpg"


def relative_path(sha: str) -> str:
    """Where an image with this content hash lives, relative to the dataset directory."""
    return f"{IMAGES_DIR}/{sha[:2]}/{sha}{EXTENSION}"


def put(out_dir: Path, data: bytes) -> tuple[str, str]:
    """Store `data`; returns (sha256, path relative to out_dir)."""
    sha = sha256_bytes(data)
    rel = relative_path(sha)
    target = Path(out_dir) / rel
    if not target.exists():
        # No fsync: a 7 ms fsync per image would cap a run at ~150 images/s per worker, and kill -9
        # safety needs only the atomic rename (like the state DB's synchronous=NORMAL).
        atomic_write_bytes(target, data, fsync=False)
    return sha, rel


def remove_partials(out_dir: Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    images = Path(out_dir) / IMAGES_DIR
    if not images.is_dir():
        return 0
    partials = [p for p in images.rglob(".*.tmp") if p.is_file()]
    for p in partials:
        p.unlink()
    return len(partials)
