"""The JSON image-search provider: pagination by nextOffset, key from the environment, errors."""

from __future__ import annotations

import json

import pytest
from pocketml.acquisition.sources import make_source
from pocketml.acquisition.sources.search import SearchConfig, SearchSource

from pocketml.errors import PocketMLError
from tests.acquisition.hostile_http import HostileServer


def page(urls: list[str], next_offset: int | None) -> bytes:
    body: dict = {"_type": "Images", "value": [{"contentUrl": u, "name": "x"} for u in urls]}
    if next_offset is not None:
        body["nextOffset"] = next_offset
    return json.dumps(body).encode()


@pytest.fixture()
def api():
    with HostileServer([]) as server:
        server.json_pages = {
            "/json?q=hot+dog&count=2&offset=0": page(["http://a/1.jpg", "http://a/2.jpg"], 2),
            "/json?q=hot+dog&count=2&offset=2": page(["http://a/3.jpg", "http://a/4.jpg"], 5),
            "/json?q=hot+dog&count=1&offset=2": page(["http://a/3.jpg"], 3),
            "/json?q=hot+dog&count=2&offset=5": page([], 5),
        }
        yield server


def test_pages_are_followed_until_results_end(api, monkeypatch):
    monkeypatch.setenv("POCKETML_SEARCH_KEY", "secret-key")
    source = make_source({"type": "search", "query": "hot dog", "endpoint": api.base + "/json", "page_size": 2})
    items = list(source.items())
    assert [i.url for i in items] == ["http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg", "http://a/4.jpg"]
    assert {i.label for i in items} == {"hot_dog"} and {i.source for i in items} == {"search"}
    assert all(h.get("Ocp-Apim-Subscription-Key") == "secret-key" for h in api.seen_headers)


def test_max_results_stops_mid_page(api):
    source = make_source({"type": "search", "query": "hot dog", "endpoint": api.base + "/json", "page_size": 2,
                          "max_results": 3, "api_key": "k", "label": "hd"})
    assert [i.url for i in source.items()] == ["http://a/1.jpg", "http://a/2.jpg", "http://a/3.jpg"]
    assert len(api.seen_headers) == 2


def test_missing_key_and_http_errors_are_clear(api, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(PocketMLError, match="MY_KEY"):
        make_source({"type": "search", "query": "hot dog", "api_key_env": "MY_KEY"})
    source = make_source({"type": "search", "query": "pizza", "endpoint": api.base + "/json", "api_key": "k"})
    with pytest.raises(PocketMLError, match="HTTP 404"):
        list(source.items())


def test_any_provider_plugs_in():
    class Canned:
        def image_urls(self, query: str, limit: int):
            yield from [f"http://c/{query}/{i}.jpg" for i in range(limit)]

    source = SearchSource(SearchConfig(query="pizza", max_results=2), provider=Canned())
    assert [i.url for i in source.items()] == ["http://c/pizza/0.jpg", "http://c/pizza/1.jpg"]
