import io
import itertools

import numpy as np
from PIL import Image
from pocketml.acquisition import hashing
from pocketml.acquisition.image_facts import facts_of

from pocketml.configs.curate import CurateConfig
from pocketml.dataset import decode_rgb
from tests.acquisition.curate_pool import as_png, photos_of, reencoded


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_lossless_copy_of_a_photo_has_the_same_pixel_hash_and_a_different_photo_does_not(photo_folder):
    first, second = photos_of(photo_folder, "cat", 2)
    original = decode_rgb(first)
    assert hashing.pixel_hash(_decoded(as_png(first))) == hashing.pixel_hash(original)
    assert hashing.pixel_hash(decode_rgb(second)) != hashing.pixel_hash(original)
    # One changed pixel is a different picture for the exact hash.
    changed = original.copy()
    changed[0, 0, 0] ^= 1
    assert hashing.pixel_hash(changed) != hashing.pixel_hash(original)


def test_reencoded_and_resized_photos_stay_within_a_few_bits_of_phash_and_dhash(photo_folder):
    for path in photos_of(photo_folder, "coffee", 8):
        original = decode_rgb(path)
        for data in (reencoded(path, quality=40), reencoded(path, quality=85, scale=0.5)):
            copy = _decoded(data)
            assert hashing.pixel_hash(copy) != hashing.pixel_hash(original)  # lossy: pixels changed
            assert hashing.hamming(hashing.phash(copy), hashing.phash(original)) <= 4, path.name
            assert hashing.hamming(hashing.dhash(copy), hashing.dhash(original)) <= 8, path.name


def test_different_photos_of_are_far_apart_in_phash(photo_folder):
    paths = photos_of(photo_folder, "cat", 20) + photos_of(photo_folder, "coffee", 20)
    hashes = [hashing.phash(decode_rgb(p)) for p in paths]
    distances = [hashing.hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert min(distances) > CurateConfig().near_distance
    assert np.median(distances) >= 24  # unrelated 64-bit hashes sit near 32 bits apart


def test_hashes_are_64_bit_hex_and_round_trip():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    value = hashing.phash(rgb)
    text = hashing.to_hex(value)
    assert len(text) == 16 and int(text, 16) == value == hashing.from_hex(text)
    assert hashing.bits_to_int(np.ones(64, bool)) == 2**64 - 1
    assert 0 <= hashing.dhash(rgb) < 2**64


def test_exif_rotated_copy_has_the_same_pixel_hash(tmp_path, photo_folder):
    path = photos_of(photo_folder, "cat", 1)[0]
    with Image.open(path) as img:
        rotated = img.convert("RGB").transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation 6: shown rotated 90 degrees clockwise, undoing the stored one
        rotated.save(tmp_path / "rot.png", exif=exif)
        img.convert("RGB").save(tmp_path / "plain.png")
    assert (
        facts_of(tmp_path / "rot.png", CurateConfig()).pixel_hash
        == facts_of(tmp_path / "plain.png", CurateConfig()).pixel_hash
    )


def test_unreadable_file_is_a_fact_with_an_error_not_an_exception(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    fact = facts_of(bad, CurateConfig())
    assert (
        fact.error is not None and fact.error.startswith("UnidentifiedImageError") and "bad.jpg" in fact.error
    )
    assert fact.width == 0 and fact.pixel_hash == ""


def test_the_baseline_copy_is_made_while_decoding_and_shows_the_image_upright(tmp_path):
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (220, 20, 20)  # left half red, right half blue, as stored
    pixels[:, 32:] = (20, 20, 220)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display, so the left half shows on top
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    config = CurateConfig(baseline_size=16)

    copy = np.frombuffer(facts_of(path, config).baseline, dtype=np.uint8).reshape(16, 16, 3).astype(int)

    assert copy[:6, :, 0].min() > 150 and copy[:6, :, 2].max() < 90  # top: red
    assert copy[-6:, :, 2].min() > 150 and copy[-6:, :, 0].max() < 90  # bottom: blue
