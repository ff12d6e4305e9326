"""Fixtures of the acquisition tests: everything they need is generated, so they run on any clone."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """ImageFolder train/val x cat/coffee of pairwise-distinct real photos, ~400x300 (photo_set.py)."""
    from tests.acquisition.photo_set import write_photo_folder

    return write_photo_folder(tmp_path_factory.mktemp("photo_folder"))
