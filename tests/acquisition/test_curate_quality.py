from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter
from pocketml.acquisition import quality
from pocketml.acquisition.curate import Item, analyse
from pocketml.acquisition.image_facts import ImageFacts

from pocketml.config import from_mapping
from pocketml.configs.curate import CurateConfig
from pocketml.dataset import decode_rgb
from pocketml.errors import PocketMLError
from tests.acquisition.curate_pool import photos_of


def _flags(rgb: np.ndarray, config: CurateConfig | None = None) -> list[str]:
    config = config or CurateConfig()
    return quality.flags(quality.measures(rgb), rgb.shape[1], rgb.shape[0], config)


def test_real_photo_carries_no_flags_and_its_degraded_copies_carry_the_right_ones(photo_folder):
    path = photos_of(photo_folder, "cat", 3)[2]
    photo = decode_rgb(path)
    assert _flags(photo) == []
    img = Image.fromarray(photo)
    assert "blurry" in _flags(np.asarray(img.filter(ImageFilter.GaussianBlur(6))))
    assert "grayscale" in _flags(np.asarray(img.convert("L").convert("RGB")))
    assert "dark" in _flags((photo * 0.08).astype(np.uint8))
    assert "bright" in _flags((255 - (255 - photo.astype(np.int16)) * 0.08).astype(np.uint8))
    assert "tiny" in _flags(np.asarray(img.resize((40, 30))))
    assert _flags(np.asarray(img.resize((400, 100)))) == ["aspect"]  # 4:1, still sharp and big enough


def test_flat_placeholder_is_low_info_and_thresholds_are_configurable():
    flat = np.full((200, 200, 3), (90, 120, 200), dtype=np.uint8)
    assert "low_info" in _flags(flat)
    assert "low_info" not in _flags(flat, CurateConfig(low_info_below=0.0))
    assert quality.excluded_by(["low_info", "dark"], CurateConfig()) == ["low_info"]
    assert quality.excluded_by(["low_info", "dark"], CurateConfig(exclude_flags=["dark"])) == ["dark"]


def test_unknown_flag_in_exclude_list_is_rejected_naming_the_accepted_ones():
    with pytest.raises(PocketMLError, match="accepted: dark, bright"):
        from_mapping(CurateConfig, {"exclude_flags": ["blury"]}, "curate")
    with pytest.raises(PocketMLError, match="group_distance"):
        from_mapping(CurateConfig, {"near_distance": 12, "group_distance": 10}, "curate")


def test_a_looser_near_distance_widens_the_unset_group_distance_alike_in_toml_api_and_cli(tmp_path):
    from pocketml.acquisition.cli_curate import config_from_args

    from pocketml.app.cli import build_parser

    assert from_mapping(CurateConfig, {"near_distance": 12}, "curate").group_distance == 12
    assert CurateConfig(near_distance=4).group_distance == 10
    toml = tmp_path / "c.toml"
    toml.write_text("[curate]\nseed = 3\n")
    args = build_parser().parse_args(["curate", "d", "--config", str(toml), "--near-distance", "12"])
    config = config_from_args(args)
    assert (config.seed, config.near_distance, config.group_distance) == (3, 12, 12)


def test_dhash_confirmation_separates_phash_lookalikes():
    def item(k: int, label: str, phash: int, dhash: int) -> Item:
        facts = ImageFacts(Path(f"{k}.jpg"), 100, 100, f"pixels{k}", phash, dhash)
        return Item(k, Path(f"{k}.jpg"), f"{k}.jpg", label, facts=facts)

    items = [item(0, "a", 0, 0), item(1, "a", 0b11, (1 << 20) - 1), item(2, "b", 0b111, 0b1)]
    alone = analyse(items, CurateConfig())
    assert alone.clusters == [[0, 1, 2]] and alone.conflicts == [[0, 1, 2]]
    confirmed = analyse(items, CurateConfig(dhash_distance=4))
    # 1's dHash is 20 bits from the others: pHash alone matched it, the pair of hashes does not.
    assert confirmed.clusters == [[0, 2]] and [(a, b) for a, b, _ in confirmed.near_pairs] == [(0, 2)]


def test_a_transparent_png_is_decoded_once_on_white_for_facts_and_contact_sheet(tmp_path, monkeypatch):
    from PIL import Image
    from pocketml.acquisition import image_facts, report

    logo = np.zeros((80, 80, 4), dtype=np.uint8)
    logo[20:60, 20:60] = (0, 0, 0, 255)  # a black square on a transparent background
    path = tmp_path / "logo.png"
    Image.fromarray(logo, "RGBA").save(path)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    facts = image_facts.facts_of(path, CurateConfig(baseline_size=8))
    assert opened == [path]  # one decoding per file
    baseline = image_facts.baseline_pixels([facts], 8)[0]
    assert baseline[0, 0].tolist() == [255, 255, 255] and baseline[4, 4].tolist() == [0, 0, 0]
    thumb = np.asarray(report._thumbnail(path, 16))
    assert thumb[0, 0].tolist() == [255, 255, 255]  # transparency is white, not black
