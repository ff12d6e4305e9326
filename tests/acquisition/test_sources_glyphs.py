"""The offline glyphs source: deterministic letters a model can learn, with realistic near-duplicates."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image
from pocketml.acquisition.sources.glyphs import (
    CONFIG,
    GlyphsConfig,
    discover_fonts,
    draws_letters,
    make_source,
    select_fonts,
)

from pocketml.config import from_mapping
from pocketml.errors import PocketMLError


def small(**overrides) -> GlyphsConfig:
    # matplotlib's bundled fonts only, so the renders are the same on every machine.
    values = {"per_letter": 12, "image_size": 48, "system_fonts": False} | overrides
    return GlyphsConfig(**values)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_items_are_encoded_images_labelled_by_letter_with_glyph_urls():
    config = small(letters=["A", "B"], per_letter=5)
    items = list(make_source(config).items())
    assert len(items) == 10
    assert [i.label for i in items] == ["A"] * 5 + ["B"] * 5
    fonts = {f.name for f in select_fonts(config)}
    for index, item in enumerate(items):
        letter, font, number = re.fullmatch(r"glyphs://([A-Z])/([^/]+)/(\d+)\?recipe=[0-9a-f]{8}", item.url).groups()
        assert letter == item.label and font in fonts and int(number) == index % 5
        assert item.source == "glyphs"
        image = Image.open(io.BytesIO(item.data))
        assert image.format == "PNG" and image.size == (48, 48) and image.mode == "RGB"
    assert len({i.url for i in items}) == 10


def test_renders_are_deterministic_and_depend_on_the_seed():
    first = [i.data for i in make_source(small()).items()]
    again = [i.data for i in make_source(small()).items()]
    other = [i.data for i in make_source(small(seed=1)).items()]
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) == len(first)
    # The state DB keys items by URL: another recipe must not reuse the URLs of the first.
    urls = {i.url for i in make_source(small()).items()}
    assert not urls & {i.url for i in make_source(small(seed=1)).items()}
    # More items per letter keeps the first ones as they were (a rerun only adds the new ones).
    fewer = {i.url: i.data for i in make_source(small(per_letter=6)).items()}
    more = {i.url: i.data for i in make_source(small(per_letter=12)).items()}
    assert all(more[url] == data for url, data in fewer.items())


def test_adding_a_letter_leaves_the_other_letters_renders_unchanged():
    two = {i.url: i.data for i in make_source(small(letters=["A", "B"])).items()}
    three = {i.url: i.data for i in make_source(small(letters=["A", "B", "C"])).items()}
    assert all(three[url] == data for url, data in two.items())


def test_jpeg_format_gives_jpeg_bytes():
    item = next(iter(make_source(small(format="jpeg")).items()))
    assert Image.open(io.BytesIO(item.data)).format == "JPEG"


def ink_features(data: bytes) -> np.ndarray:
    """The letter's ink cropped to its bounding box at 20×20: removes position, size and colours."""
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"), np.float32)
    ink = np.abs(grey - np.median(grey))
    ys, xs = np.nonzero(ink > 0.5 * ink.max())
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    crop = Image.fromarray((255 * crop / crop.max()).astype(np.uint8)).resize((20, 20), Image.Resampling.BILINEAR)
    return np.asarray(crop, np.float32).ravel() / 255.0


def test_letters_are_distinguishable_by_a_simple_classifier():
    from sklearn.linear_model import LogisticRegression

    def features(seed: int):
        items = list(make_source(small(per_letter=20, image_size=64, seed=seed, near_duplicate_rate=0.0)).items())
        return np.stack([ink_features(i.data) for i in items]), [i.label for i in items]

    train_x, train_y = features(seed=0)
    test_x, test_y = features(seed=1)  # unseen renders: other sizes, positions, rotations, colours
    accuracy = LogisticRegression(max_iter=2000).fit(train_x, train_y).score(test_x, test_y)
    assert accuracy >= 0.8, f"10 letters, chance 0.1, got {accuracy:.2f}"


def test_near_duplicates_are_present_and_only_faintly_different():
    config = small(letters=["A", "B"], per_letter=40, near_duplicate_rate=0.15)
    items = list(make_source(config).items())
    images = np.stack([pixels(i.data).astype(np.int16) for i in items])
    diffs = np.abs(images[:, None] - images[None, :]).reshape(len(items), len(items), -1).max(axis=2)
    # ±2 levels each: two copies of one original differ by at most 4.
    pairs = [(i, j) for i in range(len(items)) for j in range(i) if diffs[i, j] <= 4]
    # 78 items are candidates (index 0 of each letter never is): expect ~12 at 15 %.
    assert 4 <= len(pairs) <= 25, pairs
    for i, j in pairs:
        assert items[i].label == items[j].label
        assert items[i].data != items[j].data  # different bytes: only a perceptual check finds them
    # Fresh renders are far apart: random size, position and colours change most pixels.
    fresh = [d for i in range(len(items)) for j in range(i) if (d := diffs[i, j]) > 4]
    assert min(fresh) > 40


def test_no_near_duplicates_at_rate_zero():
    items = list(make_source(small(letters=["A"], per_letter=30, near_duplicate_rate=0.0)).items())
    images = np.stack([pixels(i.data).astype(np.int16) for i in items])
    diffs = np.abs(images[:, None] - images[None, :]).reshape(30, 30, -1).max(axis=2)
    assert all(diffs[i, j] > 40 for i in range(30) for j in range(i))


def test_fonts_that_cannot_draw_letters_are_left_out():
    found = {f.name: f for f in discover_fonts(system_fonts=False)}
    assert "DejaVuSans" in found and "cmr10" in found
    # Symbol and "missing glyph" fonts are never offered, even though their cmaps cover A–J.
    assert not {"cmex10", "cmsy10", "LastResortHE-Regular", "STIXSizOneSymReg"} & set(found)
    last_resort = found["DejaVuSans"].path.with_name("LastResortHE-Regular.ttf")
    if last_resort.is_file():
        assert not draws_letters(last_resort, tuple("ABCDEFGHIJ"))
    assert draws_letters(found["DejaVuSans"].path, tuple("ABCDEFGHIJ"))


def test_fonts_can_be_chosen_by_name_and_unknown_names_are_refused():
    source = make_source(small(fonts=["DejaVuSerif", "cmtt10"], letters=["A"], per_letter=4))
    assert {i.url.split("/")[3] for i in source.items()} == {"DejaVuSerif", "cmtt10"}
    with pytest.raises(PocketMLError, match=r"glyphs fonts \['comic sans'\] not found.*available: .*DejaVuSans"):
        make_source(small(fonts=["Comic Sans"]))


def test_config_from_toml_table_rejects_unknown_keys_and_bad_values():
    assert CONFIG is GlyphsConfig
    assert from_mapping(CONFIG, {"letters": ["X", "Y"], "per_letter": 3}, "glyphs").letters == ["X", "Y"]
    with pytest.raises(PocketMLError, match=r"unknown key 'glyphs.per_leter' \(did you mean 'per_letter'\?\)"):
        from_mapping(CONFIG, {"per_leter": 3}, "glyphs")
    with pytest.raises(PocketMLError, match=r"letters = \['AB'\] is not accepted; each entry is one character"):
        from_mapping(CONFIG, {"letters": ["AB"]}, "glyphs")
    with pytest.raises(PocketMLError, match=r"glyphs.format = 'gif' is not accepted; expected one of 'png', 'jpeg'"):
        from_mapping(CONFIG, {"format": "gif"}, "glyphs")
