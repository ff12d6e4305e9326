"""The architecture page stays true: the README links it and every repository path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "architecture.md"


def test_the_readme_links_the_architecture_page_not_a_file_users_lack():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/architecture.md)" in readme and "shared/DESIGN.md" not in readme


def test_every_path_the_architecture_page_names_exists():
    named = set(re.findall(r"`((?:acquisition|training|export|benchmarks|pocketml|tests)/[\w/.-]*?\.(?:py|md))`",
                           PAGE.read_text()))
    assert len(named) > 10
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
