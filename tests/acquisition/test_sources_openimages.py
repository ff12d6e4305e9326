"""Open Images: selection by display name, box filters, and crops that land on the object
(X scales with the width, Y with the height, after rotation) on a non-square image.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image
from pocketml.acquisition.acquire import acquire
from pocketml.acquisition.sources import make_source
from pocketml.acquisition.sources.openimages import with_margin

from pocketml.configs.acquire import AcquireConfig
from pocketml.errors import PocketMLError
from tests.acquisition.hostile_http import HostileServer

BOX = (0.25, 0.75, 0.5, 1.0)  # xmin, xmax, ymin, ymax


def noisy_with_red_box(width: int, height: int, box=BOX) -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 120, (height, width, 3), dtype=np.uint8)
    pixels[:, :, 0] = 0  # no red anywhere but the box
    xmin, xmax, ymin, ymax = box
    rows = slice(round(ymin * height), round(ymax * height))
    cols = slice(round(xmin * width), round(xmax * width))
    pixels[rows, cols, 0] = 230  # a textured red object (a flat one would be rejected as low-information)
    pixels[rows, cols, 1:] //= 2
    return Image.fromarray(pixels)


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


BOX_HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside,XClick1X,XClick2X,XClick3X,XClick4X,XClick1Y,XClick2Y,XClick3Y,XClick4Y\n"
CLICKS = ",0.3,0.5,0.6,0.7,0.6,0.7,0.8,0.9"


def box_row(image_id: str, label: str, box, group="0", depiction="0") -> str:
    xmin, xmax, ymin, ymax = box
    return f"{image_id},xclick,{label},1,{xmin},{xmax},{ymin},{ymax},0,0,{group},{depiction},0{CLICKS}\n"


@pytest.fixture()
def tables(tmp_path):
    server = HostileServer([])
    # "wide" is 400x200: a box mixing up width and height would miss the red block.
    server.files["/file/wide.jpg"] = jpeg(noisy_with_red_box(400, 200))
    # "turned" is displayed 200x400 after a 90 degree clockwise turn; stored turned back.
    server.files["/file/turned.jpg"] = jpeg(noisy_with_red_box(200, 400).rotate(90, expand=True))
    (tmp_path / "classes.csv").write_text("/m/01b9xk,Hot dog\n/m/0663v,Pizza\n/m/02wbm,Food\n")
    (tmp_path / "boxes.csv").write_text(
        BOX_HEADER
        + box_row("wide", "/m/01b9xk", BOX)
        + box_row("turned", "/m/01b9xk", BOX)
        + box_row("wide", "/m/01b9xk", (0.0, 1.0, 0.0, 1.0), group="1")  # a group of hot dogs
        + box_row("wide", "/m/01b9xk", (0.0, 0.5, 0.0, 0.5), depiction="1")  # a drawing of one
        + box_row("wide", "/m/01b9xk", (0.9, 0.95, 0.1, 0.15))  # too small to learn from
        + box_row("wide", "/m/0663v", (0.0, 0.2, 0.0, 0.2))  # pizza: not selected
    )
    with server:
        (tmp_path / "images.csv").write_text(
            "ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,OriginalSize,OriginalMD5,Thumbnail300KURL,Rotation\n"
            f"wide,train,{server.base}/file/wide.jpg,,,,,,1,x,,0.0\n"
            f"turned,train,http://unused.example/big.jpg,,,,,,1,x,{server.base}/file/turned.jpg,90.0\n"
            f"other,train,{server.base}/file/none.jpg,,,,,,1,x,,\n"
        )
        yield tmp_path


def table_for(tables, **extra) -> dict:
    return {"type": "openimages", "classes": ["hot dog"], "label": "hot_dog", "min_box_size": 0.1,
            "class_descriptions": str(tables / "classes.csv"), "boxes": str(tables / "boxes.csv"),
            "images": str(tables / "images.csv"), **extra}


def test_selection_and_filters(tables):
    items = list(make_source(table_for(tables)).items())
    assert [(i.url.rsplit("/", 1)[1], i.box, i.rotation) for i in items] == [("wide.jpg", BOX, 0), ("turned.jpg", BOX, 90)]
    loose = list(make_source(table_for(tables, include_group_of=True, include_depiction=True, min_box_size=0.0)).items())
    assert len(loose) == 5
    whole = list(make_source(table_for(tables, crop=False, thumbnails=False)).items())
    assert [i.url for i in whole][1] == "http://unused.example/big.jpg" and all(i.box is None for i in whole)


def test_crops_land_on_the_object_in_non_square_and_rotated_images(tables, tmp_path):
    summary = acquire(AcquireConfig(sources=[table_for(tables)], workers=1), tmp_path / "ds")
    assert summary["by_status"] == {"ok": 2}
    with open(tmp_path / "ds" / "pool.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    sizes = sorted((int(r["width"]), int(r["height"])) for r in rows)
    assert sizes == [(100, 200), (200, 100)]  # 0.5 of the width by 0.5 of the height, each way up
    for row in rows:
        crop = np.asarray(Image.open(tmp_path / "ds" / row["path"]))
        red = (crop[:, :, 0] > 150) & (crop[:, :, 1] < 80)
        assert red.mean() > 0.97, f"{row['source_url']}: only {red.mean():.0%} of the crop is the object"


def test_margin_grows_the_box_and_clamps_at_the_edges():
    assert with_margin((0.4, 0.6, 0.4, 0.6), 0.5) == pytest.approx((0.3, 0.7, 0.3, 0.7))
    assert with_margin((0.0, 0.5, 0.5, 1.0), 0.2) == pytest.approx((0.0, 0.6, 0.4, 1.0))


def test_unknown_class_name_is_named(tables):
    with pytest.raises(PocketMLError, match=r"no class named \['hot dogs'\]"):
        list(make_source(table_for(tables, classes=["Hot dogs"])).items())
