"""The pool contract: `pool.csv`, the one file acquisition writes for curation to read.

One row per stored image. Acquisition writes every column; curation needs `path` and `label` and
reads the rest where present, so a pool a user assembled by hand (path,label) can be curated too.
"""

from __future__ import annotations

POOL_FILE = "pool.csv"
POOL_COLUMNS = (
    "sha256",  # sha256 of the stored file's bytes; also its name under images/
    "path",  # relative to the dataset directory
    "label",
    "source",  # which source produced it (urls, imagenet, openimages, search, folder, glyphs)
    "source_url",  # where it came from (URL or original file path)
    "width",  # pixels of the stored image
    "height",
    "split",  # a split the source defines (an ImageFolder's train/val/test), or empty
)
REQUIRED_POOL_COLUMNS = ("path", "label")  # what curation cannot do without
