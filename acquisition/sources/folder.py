"""A local ImageFolder: one subfolder per class (`ROOT/hot_dog/*.jpg`), imported through the same
verify-and-store path as downloads, so local photos are checked and deduplicated like any other.
A `train/val/test` level above the class folders is kept as each item's predefined split, which
curation respects and audits for leakage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pocketml.acquisition.sources.base import Source, SourceItem

from pocketml.dataset import SPLIT_ALIASES, is_image_file
from pocketml.errors import PocketMLError

NAME = "folder"


@dataclass
class FolderConfig:
    path: str = ""  # the root folder holding one subfolder per class; required
    labels: list[str] = field(default_factory=list)  # import only these class folders (empty = all)


CONFIG = FolderConfig


class FolderSource:
    name = NAME

    def __init__(self, config: FolderConfig):
        self.root = Path(config.path).expanduser()
        if not config.path or not self.root.is_dir():
            raise PocketMLError(f"[source(folder)] path {config.path!r} is not a directory of class subfolders")
        self.labels = set(config.labels)

    def items(self) -> Iterator[SourceItem]:
        for split, class_dir in self._class_dirs():
            if self.labels and class_dir.name not in self.labels:
                continue
            for path in sorted(class_dir.rglob("*")):
                if is_image_file(path):
                    yield SourceItem(path.resolve().as_uri(), class_dir.name, NAME, split=split)

    def listing_digest(self) -> str:
        """sha256 of what the folder holds now (each image's path, size and mtime): acquisition names
        its shards by it and the pipeline compares it, so added, removed or replaced photos are seen."""
        digest = hashlib.sha256()
        for item in self.items():
            path = Path(url2pathname(urlparse(item.url).path))
            stat = path.stat()
            digest.update(f"{item.url}\0{item.label}\0{item.split}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _class_dirs(self) -> list[tuple[str | None, Path]]:
        """(split or None, class folder); a train/val/test level is kept as the items' split."""
        dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if dirs and all(d.name.lower() in SPLIT_ALIASES for d in dirs):
            found = [(SPLIT_ALIASES[d.name.lower()], c) for d in dirs for c in sorted(d.iterdir())
                     if c.is_dir() and not c.name.startswith(".")]
        else:
            found = [(None, d) for d in dirs]
        if not found:
            raise PocketMLError(f"{self.root} has no class subfolders; expected ROOT/<label>/*.jpg")
        return found


def make_source(config: FolderConfig) -> Source:
    return FolderSource(config)
