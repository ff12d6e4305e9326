"""Image hashes for duplicate detection: an exact pixel hash and two 64-bit perceptual hashes.

- `pixel_hash`: sha256 of the decoded RGB pixels (EXIF orientation applied, alpha composited on
  white) plus the image size. Chosen over a hash of a quantised thumbnail because "exact" should
  mean exact: two files get the same pixel hash only when they decode to the same picture, so a
  PNG saved from a JPEG's pixels, the same JPEG with different metadata, or a lossless re-save are
  duplicates with no false positives. Lossy re-encodes and resizes change pixels; those are caught
  by the perceptual hashes at a Hamming distance of a few bits (the tests measure it).
- `phash`: 64-bit DCT hash (grey 32x32, 2-D DCT-II, top-left 8x8 block, bit = coefficient above the
  median of the 63 AC coefficients). Robust to re-encoding, resizing and small colour changes
  (0-2 bits on the hot-dog photos at JPEG q60 or half size) but not to crops: cutting 5% off two
  edges moved it 6-14 bits, so cropped copies are only caught at the looser group distance.
- `dhash`: 64-bit difference hash (grey 9x8, bit = pixel brighter than its right neighbour).

Bits are packed row-major, first bit most significant, written as 16 lowercase hex digits.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image
from scipy.fft import dctn

PHASH_SIZE = 32  # pHash input side: 4x the 8x8 kept block, the usual choice (imagehash, imagededup)
HASH_SIZE = 8  # 8x8 bits = 64-bit hashes


def pixel_hash(rgb: np.ndarray) -> str:
    """Hex sha256 of decoded pixels and their shape; equal for any lossless re-encoding."""
    pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
    digest = hashlib.sha256(f"{pixels.shape[0]}x{pixels.shape[1]}x{pixels.shape[2]}:".encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()


def grey(rgb: np.ndarray) -> Image.Image:
    """Luminance image (ITU-R 601, what Pillow's 'L' mode uses)."""
    return Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").convert("L")


def phash(image: np.ndarray | Image.Image) -> int:
    """64-bit DCT perceptual hash as an int."""
    small = _resized_grey(image, (PHASH_SIZE, PHASH_SIZE))
    coefficients = dctn(small, type=2, norm="ortho")[:HASH_SIZE, :HASH_SIZE].ravel()
    # The DC term is the mean brightness, far larger than the rest: leave it out of the median.
    median = np.median(coefficients[1:])
    return bits_to_int(coefficients > median)


def dhash(image: np.ndarray | Image.Image) -> int:
    """64-bit difference hash as an int."""
    small = _resized_grey(image, (HASH_SIZE + 1, HASH_SIZE))
    return bits_to_int((small[:, :-1] > small[:, 1:]).ravel())


def bits_to_int(bits: np.ndarray) -> int:
    """Pack 64 booleans (first = most significant) into an int."""
    value = 0
    for bit in np.asarray(bits, dtype=bool).ravel().tolist():
        value = (value << 1) | int(bit)
    return value


def to_hex(value: int) -> str:
    """16 hex digits of a 64-bit hash."""
    return f"{value:016x}"


def from_hex(text: str) -> int:
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (a ^ b).bit_count()


def _resized_grey(image: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """float64 grey pixels at (width, height) = size, resized with an antialiasing filter."""
    img = image if isinstance(image, Image.Image) else grey(image)
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
