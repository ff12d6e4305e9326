"""Verification: what is kept, what is refused and why, and how kept images are normalised."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image
from pocketml.acquisition import hashing
from pocketml.acquisition.verify import Rejected, crop_box, grey_entropy, normalised_image, verify_and_store

from pocketml.configs.acquire import VerifyConfig
from tests.acquisition.hostile_http import bomb_png, placeholder_png, tiny_jpeg


def encode(image: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def status_of(data: bytes, config: VerifyConfig | None = None, **kw) -> str:
    try:
        normalised_image(data, config or VerifyConfig(), **kw)
    except Rejected as exc:
        return exc.status
    return "ok"


@pytest.fixture(scope="module")
def photos(photo_folder):
    return [p.read_bytes() for p in sorted(photo_folder.rglob("*.jpg"))]


def test_every_real_photo_passes_and_none_looks_like_a_placeholder(photos):
    config = VerifyConfig()
    assert all(status_of(b, config) == "ok" for b in photos)
    lowest = min(grey_entropy(Image.open(io.BytesIO(b))) for b in photos)
    assert lowest > config.low_info_entropy + 1  # real photos are far from the placeholder threshold


def test_refusals_name_the_reason(photos):
    assert status_of(b"<html><body>nope</body></html>") == "not_image"
    assert status_of(photos[0][: len(photos[0]) // 2]) == "truncated"
    assert status_of(bomb_png()) == "decompression_bomb"
    assert status_of(tiny_jpeg()) == "too_small"
    assert status_of(encode(Image.new("RGB", (600, 100), (9, 9, 9)))) in ("bad_aspect",)
    assert status_of(placeholder_png()) == "placeholder"
    assert status_of(photos[0], final_url="https://s.yimg.com/pw/images/en-us/photo_unavailable.png") == "placeholder"
    assert status_of(encode(Image.open(io.BytesIO(photos[0])), "PNG"), VerifyConfig(formats=["JPEG"])) == "bad_format"


def test_bomb_is_refused_below_pillows_own_limit():
    # 12000x12000 = 144 M pixels: under Pillow's hard error (2 x 89 M), over our max_pixels.
    assert status_of(bomb_png(12_000, 12_000), VerifyConfig(max_pixels=80_000_000)) == "decompression_bomb"


def test_known_placeholder_dhash_matches_a_reencoding(photos):
    original = Image.open(io.BytesIO(photos[5])).convert("RGB")
    known = hashing.to_hex(hashing.dhash(original))
    reencoded = encode(original.resize((original.width // 2, original.height // 2)), quality=60)
    assert status_of(reencoded, VerifyConfig(placeholder_dhashes=[known])) == "placeholder"
    assert status_of(photos[6], VerifyConfig(placeholder_dhashes=[known])) == "ok"


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (200, 100), (10, 200, 10))
    for x in range(0, 200, 7):
        image.putpixel((x, x % 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    upright = normalised_image(encode(image, exif=exif), VerifyConfig(low_info_entropy=0))
    assert upright.size == (100, 200)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    for y in range(64):
        for x in range(32):
            rgba.putpixel((x, y), (200, 0, 0, 255))
    out = normalised_image(encode(rgba, "PNG"), VerifyConfig(low_info_entropy=0))
    assert out.mode == "RGB"
    assert out.getpixel((48, 10)) == (255, 255, 255)  # transparent -> white, not black
    assert out.getpixel((10, 10)) == (200, 0, 0)


def test_resize_to_max_side_keeps_aspect(photos):
    out = normalised_image(photos[0], VerifyConfig(max_side=100))
    original = Image.open(io.BytesIO(photos[0]))
    assert max(out.size) == 100
    assert abs(out.width / out.height - original.width / original.height) < 0.02


def test_crop_scales_x_with_width_and_y_with_height():
    # 400 wide, 100 high: a box from x 0.5..1.0, y 0.0..0.5 is 200x50 pixels at (200, 0).
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (200, 0, 400, 50))
    crop = crop_box(image, (0.5, 1.0, 0.0, 0.5))
    assert crop.size == (200, 50)
    assert crop.getextrema() == ((255, 255), (255, 255), (255, 255))  # all white: exactly the box


def test_rotation_is_applied_before_the_crop():
    # A 400x100 image rotated 90 degrees clockwise is 100x400; its top-left white block moves top-right.
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 100, 100))
    for x in range(0, 400, 3):
        image.putpixel((x, 50), (90, 90, 90))
    box = (0.0, 1.0, 0.0, 0.25)  # top quarter of the rotated 100x400 image
    out = normalised_image(encode(image, "PNG"), VerifyConfig(min_side=10, low_info_entropy=0, max_aspect=10),
                           box=box, rotation=90)
    assert out.size == (100, 100)
    assert out.getpixel((80, 20))[0] > 200  # the white block is there after rotating


def test_verified_image_is_stored_by_content_hash(tmp_path, photos):
    result = verify_and_store(photos[0], VerifyConfig(), str(tmp_path))
    stored = tmp_path / result.path
    assert result.status == "ok" and stored.is_file()
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == result.sha256 == stored.stem
    assert result.path == f"images/{result.sha256[:2]}/{result.sha256}.jpg"
