"""The offline `glyphs` source: letters rendered from fonts on this machine, the notMNIST recipe.

notMNIST (Yaroslav Bulatov, 2011) is letters A–J taken from many fonts. Here each image is one
letter drawn from one font with a random size, position, rotation, stroke width, colours and
background noise, so `make demo` has a real 10-class problem with no internet. The renders go
through the normal acquisition path as encoded bytes (`SourceItem.data`): verified, stored by
content hash and recorded in the state DB like any downloaded photo. Their URLs are
`glyphs://<letter>/<font>/<index>?recipe=<digest of the render settings>`.

Every render is a pure function of (seed, letter, font, index): adding a font or a letter never
changes the other images, and two runs produce identical bytes. A small share of items are
deliberate near-duplicates (an earlier render of the same letter with faint noise), because real
scraped data has them and curation should find and remove them.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pocketml.acquisition.sources.base import Source, SourceItem

from pocketml.errors import PocketMLError

NAME = "glyphs"
FONT_SUFFIXES = (".ttf", ".otf")
# Fonts whose code points for A–J hold symbols, math delimiters or "missing glyph" boxes, not letters.
SYMBOL_FONT_PREFIXES = ("cmex", "cmsy", "lastresort", "stixsiz", "stixnonuni", "dejavusansdisplay",
                        "dejavuserifdisplay", "opensymbol", "symbol", "wingding", "webdings", "dingbat")
SYSTEM_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.fonts", "~/.local/share/fonts",
                    "/Library/Fonts", "/System/Library/Fonts", "~/Library/Fonts")


@dataclass
class GlyphsConfig:
    letters: list[str] = field(default_factory=lambda: list("ABCDEFGHIJ"))  # one class per letter (label = letter)
    per_letter: int = 40  # images rendered per letter, near-duplicates included
    image_size: int = 128  # side of the square output image, px
    fonts: list[str] = field(default_factory=list)  # font file stems to use (e.g. "DejaVuSerif"); empty = all found
    system_fonts: bool = True  # also use fonts installed on this machine, not only matplotlib's bundled ones
    min_height: float = 0.45  # smallest glyph height as a fraction of the image side
    max_height: float = 0.85  # largest glyph height as a fraction of the image side
    max_rotation: float = 15.0  # degrees, either direction
    max_stroke: int = 2  # px of extra outline added to the strokes (0 = the font's own weight)
    noise: float = 0.06  # std of the Gaussian background/pixel noise, as a fraction of 255
    min_contrast: float = 0.35  # smallest luminance gap between letter and background, 0..1
    near_duplicate_rate: float = 0.05  # share of items that re-emit an earlier render with faint noise
    format: Literal["png", "jpeg"] = "png"  # encoding of the bytes handed to verification
    seed: int = 0  # every render is a function of (seed, letter, font, index)

    def __post_init__(self) -> None:
        if not self.letters:
            raise ValueError("letters must name at least one letter")
        bad = [c for c in self.letters if not isinstance(c, str) or len(c) != 1 or not c.strip()]
        if bad:
            raise ValueError(f"letters = {bad!r} is not accepted; each entry is one character, e.g. \"A\"")
        if len(set(self.letters)) != len(self.letters):
            raise ValueError(f"letters = {self.letters!r} repeats a letter; each letter is one class")
        if self.per_letter < 1:
            raise ValueError(f"per_letter = {self.per_letter} is not accepted; expected an integer >= 1")
        if self.image_size < 16:
            raise ValueError(f"image_size = {self.image_size} is not accepted; expected >= 16 px")
        if not 0.05 <= self.min_height <= self.max_height <= 1.0:
            raise ValueError(f"min_height = {self.min_height}, max_height = {self.max_height} are not accepted; "
                             "expected 0.05 <= min_height <= max_height <= 1")
        if not 0.0 <= self.near_duplicate_rate < 1.0:
            raise ValueError(f"near_duplicate_rate = {self.near_duplicate_rate} is not accepted; expected 0 <= rate < 1")
        if not 0.0 <= self.min_contrast <= 0.9:
            raise ValueError(f"min_contrast = {self.min_contrast} is not accepted; expected 0..0.9")
        if self.max_stroke < 0 or self.noise < 0 or self.max_rotation < 0:
            raise ValueError("max_stroke, noise and max_rotation must be >= 0")


CONFIG = GlyphsConfig


@dataclass(frozen=True)
class Font:
    name: str  # file stem, unique per source: the <font> part of glyphs://<letter>/<font>/<index>
    path: Path


class GlyphsSource:
    """A stream of rendered letters: `per_letter` items per letter, fonts taken in turn."""

    name = NAME

    def __init__(self, config: GlyphsConfig) -> None:
        self.config = config
        self.fonts = select_fonts(config)

    def items(self) -> Iterator[SourceItem]:
        recipe = recipe_digest(self.config)
        for letter in self.config.letters:
            for index in range(self.config.per_letter):
                font, pixels = render_item(self.config, self.fonts, letter, index)
                yield SourceItem(url=f"glyphs://{letter}/{font.name}/{index}?recipe={recipe}", label=letter,
                                 source=NAME, data=encode(pixels, self.config.format))

    def __len__(self) -> int:
        return len(self.config.letters) * self.config.per_letter


# Fields that change what item i looks like; letters, per_letter and the font list only add or drop items.
RECIPE_FIELDS = ("image_size", "min_height", "max_height", "max_rotation", "max_stroke", "noise", "min_contrast",
                 "near_duplicate_rate", "format", "seed")


def recipe_digest(config: GlyphsConfig) -> str:
    """8 hex digits naming the render recipe, part of each URL: the acquisition state DB keys items by
    URL, so a new seed or size must give new URLs or a rerun would keep the old renders as done."""
    text = repr([(name, getattr(config, name)) for name in RECIPE_FIELDS])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def make_source(config: GlyphsConfig) -> Source:
    return GlyphsSource(config)


# The contracts file names this entry point too; both build the same source.
source_from_config = make_source


# ---------------------------------------------------------------- fonts


def select_fonts(config: GlyphsConfig) -> list[Font]:
    """The fonts to draw from, sorted by name so the font of item i is the same on every run."""
    found = discover_fonts(config.system_fonts)
    usable = [f for f in found if draws_letters(f.path, tuple(config.letters))]
    if config.fonts:
        wanted = {n.lower() for n in config.fonts}
        chosen = [f for f in usable if f.name.lower() in wanted]
        missing = sorted(wanted - {f.name.lower() for f in chosen})
        if missing:
            raise PocketMLError(f"glyphs fonts {missing} not found or cannot draw {''.join(config.letters)}; "
                                f"available: {', '.join(f.name for f in usable)}")
        usable = chosen
    if not usable:
        raise PocketMLError(f"no font on this machine can draw {''.join(config.letters)}; install a TrueType font "
                            "(e.g. apt-get install fonts-dejavu) or pip install matplotlib")
    return usable


def discover_fonts(system_fonts: bool) -> list[Font]:
    """matplotlib's bundled fonts, then system fonts; one entry per file stem (the first one found)."""
    dirs = [bundled_font_dir()] + ([Path(d).expanduser() for d in system_font_dirs()] if system_fonts else [])
    fonts: dict[str, Font] = {}
    for folder in dirs:
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in FONT_SUFFIXES or not path.is_file():
                continue
            if path.stem.lower().startswith(SYMBOL_FONT_PREFIXES):
                continue
            fonts.setdefault(path.stem.lower(), Font(name=safe_name(path.stem), path=path))
    return sorted(fonts.values(), key=lambda f: f.name.lower())


def bundled_font_dir() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def system_font_dirs() -> list[str]:
    dirs = list(SYSTEM_FONT_DIRS)
    if sys.platform == "win32":
        dirs.append(os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts"))
    return dirs


def safe_name(stem: str) -> str:
    """A font name that fits in a URL path segment."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


@lru_cache(maxsize=256)
def draws_letters(path: Path, letters: tuple[str, ...]) -> bool:
    """True when the font has a real, distinct glyph for every letter (not a box or a symbol)."""
    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False
    masks = []
    for letter in letters:
        mask = glyph_mask(font, letter, stroke=0)
        if mask is None:
            return False
        masks.append(np.asarray(mask.resize((16, 16)), dtype=np.int16))
    # Fonts without the letters draw the same "missing glyph" box for each of them.
    return all(np.abs(masks[i] - masks[j]).mean() > 4.0 for i in range(len(masks)) for j in range(i))


def glyph_mask(font: ImageFont.FreeTypeFont, letter: str, stroke: int) -> Image.Image | None:
    """The letter as an 8-bit coverage mask cropped to its ink, or None when the font draws nothing."""
    left, top, right, bottom = font.getbbox(letter, stroke_width=stroke)
    if right - left < 2 or bottom - top < 2:
        return None
    pad = 2 + stroke
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), letter, fill=255, font=font,
                                stroke_width=stroke, stroke_fill=255)
    box = canvas.getbbox()
    return canvas.crop(box) if box else None


# ---------------------------------------------------------------- rendering


def item_rng(seed: int, letter: str, font: str, index: int) -> np.random.Generator:
    """A generator owned by one item, so renders do not depend on iteration order or on other items."""
    digest = hashlib.sha256(f"{seed}\x00{letter}\x00{font}\x00{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def render_item(config: GlyphsConfig, fonts: list[Font], letter: str, index: int) -> tuple[Font, np.ndarray]:
    """The font and RGB pixels of item `index` of `letter`: a fresh render or a near-duplicate."""
    chooser = item_rng(config.seed, letter, "duplicate?", index)
    if index > 0 and chooser.random() < config.near_duplicate_rate:
        original = int(chooser.integers(0, index))
        font = fonts[original % len(fonts)]
        pixels = render(config, font, letter, original)
        return font, faint_copy(pixels, chooser)
    font = fonts[index % len(fonts)]
    return font, render(config, font, letter, index)


def faint_copy(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same render with ±2 levels of noise: new bytes and pixel hash, same perceptual hash."""
    jitter = rng.integers(-2, 3, size=pixels.shape)
    return np.clip(pixels.astype(np.int16) + jitter, 0, 255).astype(np.uint8)


def render(config: GlyphsConfig, font: Font, letter: str, index: int) -> np.ndarray:
    """One letter from one font as uint8 RGB [size, size, 3]; a pure function of its arguments."""
    rng = item_rng(config.seed, letter, font.name, index)
    size = config.image_size
    background, ink = colour_pair(rng, config.min_contrast)
    mask = placed_mask(config, font, letter, rng)
    canvas = background_field(rng, size, background)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    image = canvas * (1.0 - alpha) + np.asarray(ink, np.float32) * alpha
    image += rng.normal(0.0, config.noise * 255.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def placed_mask(config: GlyphsConfig, font: Font, letter: str, rng: np.random.Generator) -> np.ndarray:
    """The letter's coverage mask, sized, rotated and placed at random inside a size×size frame."""
    size = config.image_size
    height = int(round(size * rng.uniform(config.min_height, config.max_height)))
    stroke = int(rng.integers(0, config.max_stroke + 1))
    # Draw large, then scale down: the stroke width stays in proportion and edges stay smooth.
    face = ImageFont.truetype(str(font.path), max(32, 2 * size))
    mask = glyph_mask(face, letter, stroke=2 * stroke)  # drawn at twice the output size
    if mask is None:
        raise PocketMLError(f"font {font.name} draws nothing for {letter!r}")
    angle = float(rng.uniform(-config.max_rotation, config.max_rotation))
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    scale = height / mask.height
    width = max(1, int(round(mask.width * scale)))
    if width > size:  # wide letters (W, M in wide fonts) must still fit the frame
        scale = size / mask.width
        width, height = size, max(1, int(round(mask.height * scale)))
    mask = mask.resize((width, max(1, height)), Image.Resampling.LANCZOS)
    frame = Image.new("L", (size, size), 0)
    x = int(rng.integers(0, size - mask.width + 1))
    y = int(rng.integers(0, size - mask.height + 1))
    frame.paste(mask, (x, y))
    return np.asarray(frame)


def colour_pair(rng: np.random.Generator, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    """Background and ink colours whose luminances differ by at least `min_contrast`."""
    weights = np.array([0.299, 0.587, 0.114])
    while True:
        background = rng.uniform(0, 255, size=3)
        ink = rng.uniform(0, 255, size=3)
        if abs(float(weights @ background - weights @ ink)) / 255.0 >= min_contrast:
            return background, ink


def background_field(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """A flat colour with a gentle linear gradient, like paper under uneven light."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    gx, gy = rng.uniform(-20.0, 20.0, size=2)
    shade = gx * ramp[None, :] + gy * ramp[:, None]
    return np.clip(colour[None, None, :].astype(np.float32) + shade[..., None], 0, 255)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, "RGB")
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=92)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
