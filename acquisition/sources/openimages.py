"""Open Images: boxes of the classes named by display name, cropped after download.

Three tables (local paths or URLs, plain or .gz): class descriptions (`/m/id,Display Name`), box
annotations (`ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,
IsGroupOf,IsDepiction,IsInside[,XClick...]`) and the image table (`ImageID,...,OriginalURL,...,
Thumbnail300KURL,Rotation`). Box coordinates are fractions of the *displayed* image: X of its
width, Y of its height, after the Rotation the image table gives; the crop itself happens in
verification (acquisition.verify.crop_box), where the pixels are.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from pocketml.acquisition.sources.base import Source, SourceItem
from pocketml.acquisition.sources.textio import open_lines

from pocketml.errors import PocketMLError

NAME = "openimages"
Box = tuple[float, float, float, float]


@dataclass
class OpenImagesConfig:
    classes: list[str] = field(default_factory=list)  # display names to select, e.g. ["Hot dog"]
    label: str = ""  # label for every selected box (default: the class's display name, spaces as underscores)
    class_descriptions: str = ""  # class-descriptions-boxable.csv: path or URL
    boxes: str = ""  # *-annotations-bbox.csv: path or URL (streamed; only the selected classes are kept)
    images: str = ""  # *-images-with-rotation.csv: path or URL
    crop: bool = True  # one item per box (cropped); false = one whole image per photo
    margin: float = 0.0  # fraction of the box's width/height added on each side of a crop (context)
    min_box_size: float = 0.0  # boxes narrower or shorter than this fraction of the image are dropped
    include_group_of: bool = False  # IsGroupOf boxes cover several objects: usually not one clean example
    include_depiction: bool = False  # IsDepiction: drawings/toys of the thing, not the thing
    thumbnails: bool = True  # fetch Thumbnail300KURL (about 300k pixels) instead of the full OriginalURL
    max_images: int = 0  # stop after this many items (0 = all)


CONFIG = OpenImagesConfig


def read_class_ids(location: str, names: list[str]) -> dict[str, str]:
    """LabelName (/m/...) -> display name, for the wanted display names (case-insensitive)."""
    wanted = {n.strip().lower(): n for n in names}
    found: dict[str, str] = {}
    with open_lines(location, "openimages.class_descriptions") as fh:
        for row in csv.reader(fh):
            if len(row) >= 2 and row[1].strip().lower() in wanted:
                found[row[0].strip()] = row[1].strip()
    missing = set(wanted) - {v.lower() for v in found.values()}
    if missing:
        raise PocketMLError(f"Open Images has no class named {sorted(missing)} in {location}; names are case-insensitive display names")
    return found


def keep_box(row: dict[str, str], config: OpenImagesConfig) -> bool:
    if not config.include_group_of and row.get("IsGroupOf") == "1":
        return False
    if not config.include_depiction and row.get("IsDepiction") == "1":
        return False
    width = float(row["XMax"]) - float(row["XMin"])
    height = float(row["YMax"]) - float(row["YMin"])
    return width >= config.min_box_size and height >= config.min_box_size


def with_margin(box: Box, margin: float) -> Box:
    """Grow a normalised (xmin, xmax, ymin, ymax) box by `margin` of its own size, clamped to the image."""
    xmin, xmax, ymin, ymax = box
    dx, dy = (xmax - xmin) * margin, (ymax - ymin) * margin
    return max(0.0, xmin - dx), min(1.0, xmax + dx), max(0.0, ymin - dy), min(1.0, ymax + dy)


class OpenImagesSource:
    name = NAME

    def __init__(self, config: OpenImagesConfig):
        missing = [k for k in ("class_descriptions", "boxes", "images") if not getattr(config, k)]
        if not config.classes or missing:
            raise PocketMLError(f"[source(openimages)] needs `classes` and the tables {missing or ''} (paths or URLs)")
        self.config = config

    def selected_boxes(self) -> dict[str, list[tuple[str, Box]]]:
        """ImageID -> [(display name, box)] for the wanted classes, after the filters."""
        ids = read_class_ids(self.config.class_descriptions, self.config.classes)
        boxes: dict[str, list[tuple[str, Box]]] = defaultdict(list)
        with open_lines(self.config.boxes, "openimages.boxes") as fh:
            for row in csv.DictReader(fh):
                if row["LabelName"] in ids and keep_box(row, self.config):
                    box = (float(row["XMin"]), float(row["XMax"]), float(row["YMin"]), float(row["YMax"]))
                    boxes[row["ImageID"]].append((ids[row["LabelName"]], box))
        return boxes

    def items(self) -> Iterator[SourceItem]:
        boxes = self.selected_boxes()
        count = 0
        with open_lines(self.config.images, "openimages.images") as fh:
            for row in csv.DictReader(fh):
                found = boxes.get(row["ImageID"])
                url = self._url(row)
                if not found or not url:
                    continue
                rotation = int(float(row.get("Rotation") or 0))
                for item in self._items_of(url, rotation, found):
                    yield item
                    count += 1
                    if self.config.max_images and count >= self.config.max_images:
                        return

    def _url(self, row: dict[str, str]) -> str:
        thumb = (row.get("Thumbnail300KURL") or "").strip()
        return thumb if self.config.thumbnails and thumb else (row.get("OriginalURL") or "").strip()

    def _items_of(self, url: str, rotation: int, found: list[tuple[str, Box]]) -> Iterator[SourceItem]:
        if not self.config.crop:
            yield SourceItem(url, self._label(found[0][0]), NAME, rotation=rotation)
            return
        for name, box in found:
            yield SourceItem(url, self._label(name), NAME, box=with_margin(box, self.config.margin), rotation=rotation)

    def _label(self, display_name: str) -> str:
        return self.config.label or display_name.replace(" ", "_")


def make_source(config: OpenImagesConfig) -> Source:
    return OpenImagesSource(config)
