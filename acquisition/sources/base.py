"""What every source yields: a stream of items the downloader fetches (or, for local sources,
reads), verifies and stores. Streams are generators: a 13M-line URL list is never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SourceItem:
    url: str  # http(s) URL, file:// URL of a local file, or a source-specific id (glyphs://A/17)
    label: str
    source: str  # the source's name: urls, imagenet, openimages, search, folder, glyphs
    # Open Images box in normalised coordinates (xmin, xmax, ymin, ymax), 0..1, cropped after download.
    box: tuple[float, float, float, float] | None = None
    rotation: int = 0  # degrees clockwise to apply before cropping (Open Images' Rotation column)
    data: bytes | None = None  # bytes made locally (glyphs): no download, straight to verification
    split: str | None = None  # a split the source itself defines (train/val/test); curation keeps and audits it


class Source(Protocol):
    name: str

    def items(self) -> Iterator[SourceItem]: ...
