"""Line streams from a local file (plain or .gz) or an http(s) URL, for the index files sources
read (words.txt, Open Images CSVs): streamed, so a 2 GB box table is never held in memory.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pocketml.configs.acquire import DEFAULT_USER_AGENT
from pocketml.errors import PocketMLError


@contextlib.contextmanager
def open_lines(location: str, what: str, timeout: float = 60.0) -> Iterator[io.TextIOBase]:
    """A text stream of `location`; `what` names the file in errors (e.g. 'imagenet.words')."""
    if not location:
        raise PocketMLError(f"{what} is empty; give a local path or an http(s) URL")
    if location.startswith(("http://", "https://")):
        request = urllib.request.Request(location, headers={"User-Agent": DEFAULT_USER_AGENT})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise PocketMLError(f"{what}: cannot fetch {location}: {exc}") from exc
        with response:
            raw = gzip.GzipFile(fileobj=response) if location.endswith(".gz") else response
            yield io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        return
    path = Path(location).expanduser()
    if not path.is_file():
        raise PocketMLError(f"{what}: {path} does not exist; give a local path or an http(s) URL")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        yield fh
