"""Image-search APIs: a provider interface and one concrete JSON provider.

The provider speaks the Bing Image Search v7 shape, which several search APIs copy: GET
`endpoint?q=...&count=...&offset=...` with the key in a header, answering
`{"value": [{"contentUrl": ...}], "nextOffset": N}`. The key comes from the config or, better
(keys do not belong in committed TOML), from the environment variable it names.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from pocketml.acquisition.sources.base import Source, SourceItem

from pocketml.configs.acquire import DEFAULT_USER_AGENT
from pocketml.errors import PocketMLError

NAME = "search"


@dataclass
class SearchConfig:
    query: str = ""  # what to search for, e.g. "hot dog"; required
    label: str = ""  # label of the results (default: the query, spaces as underscores)
    provider: Literal["bing"] = "bing"  # which API shape to speak
    endpoint: str = "https://api.bing.microsoft.com/v7.0/images/search"  # the API's image-search URL
    api_key: str = ""  # the key itself; empty = read it from api_key_env
    api_key_env: str = "POCKETML_SEARCH_KEY"  # environment variable holding the key
    key_header: str = "Ocp-Apim-Subscription-Key"  # HTTP header the key is sent in
    max_results: int = 150  # URLs to collect in all
    page_size: int = 50  # results asked for per request (the API may return fewer)
    timeout: float = 15.0  # seconds per API request


CONFIG = SearchConfig


class SearchProvider(Protocol):
    def image_urls(self, query: str, limit: int) -> Iterator[str]: ...


class JsonImageSearch:
    """Paginated `value[].contentUrl` / `nextOffset` responses."""

    def __init__(self, endpoint: str, key: str, key_header: str, page_size: int, timeout: float):
        self.endpoint, self.key, self.key_header = endpoint, key, key_header
        self.page_size, self.timeout = page_size, timeout

    def image_urls(self, query: str, limit: int) -> Iterator[str]:
        offset, given = 0, 0
        while given < limit:
            page = self._page(query, offset, min(self.page_size, limit - given))
            urls = [v.get("contentUrl") for v in page.get("value", []) if isinstance(v, dict) and v.get("contentUrl")]
            for url in urls[: limit - given]:
                yield url
                given += 1
            next_offset = page.get("nextOffset")
            if not urls or not isinstance(next_offset, int) or next_offset <= offset:
                return  # no more results, or an API that stopped paginating
            offset = next_offset

    def _page(self, query: str, offset: int, count: int) -> dict:
        url = f"{self.endpoint}?{urllib.parse.urlencode({'q': query, 'count': count, 'offset': offset})}"
        request = urllib.request.Request(url, headers={self.key_header: self.key, "User-Agent": DEFAULT_USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read(20_000_000))
        except urllib.error.HTTPError as exc:
            hint = " (check the API key)" if exc.code in (401, 403) else ""
            raise PocketMLError(f"image search {self.endpoint} answered HTTP {exc.code}{hint}") from exc
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
            raise PocketMLError(f"image search {self.endpoint} failed: {exc}") from exc


PROVIDERS = {"bing": JsonImageSearch}


class SearchSource:
    name = NAME

    def __init__(self, config: SearchConfig, provider: SearchProvider | None = None):
        if not config.query:
            raise PocketMLError("[source(search)] needs `query`, e.g. query = \"hot dog\"")
        self.config = config
        self.provider = provider or self._provider()

    def _provider(self) -> SearchProvider:
        key = self.config.api_key or os.environ.get(self.config.api_key_env, "")
        if not key:
            raise PocketMLError(f"[source(search)] has no API key: set `api_key` or the environment variable "
                                f"{self.config.api_key_env}")
        cfg = self.config
        return PROVIDERS[cfg.provider](cfg.endpoint, key, cfg.key_header, cfg.page_size, cfg.timeout)

    def items(self) -> Iterator[SourceItem]:
        label = self.config.label or self.config.query.strip().replace(" ", "_")
        for url in self.provider.image_urls(self.config.query, self.config.max_results):
            yield SourceItem(url, label, NAME)


def make_source(config: SearchConfig) -> Source:
    return SearchSource(config)
