"""The state DB: one row per URL, resume bookkeeping, duplicate detection, and durability."""

from __future__ import annotations

import sqlite3

from pocketml.acquisition.sources.base import SourceItem
from pocketml.acquisition.state import Outcome, State, item_key


def items(*urls: str, label: str = "a") -> list[SourceItem]:
    return [SourceItem(u, label, "urls") for u in urls]


def test_open_shard_records_once_and_returns_only_pending(tmp_path):
    state = State(tmp_path / "s.sqlite")
    todo = state.open_shard("s0", items("http://x/1", "http://x/2", "http://x/1"))
    assert [i.url for i in todo] == ["http://x/1", "http://x/2"]
    state.record("http://x/1", Outcome("ok", sha256="a" * 64, raw_sha256="r1", path="images/aa/a.jpg"))
    state.commit()
    assert [i.url for i in state.open_shard("s0", items("http://x/1", "http://x/2"))] == ["http://x/2"]
    assert state.repeated_urls() == 1  # the URL listed twice in one shard


def test_a_url_seen_in_an_earlier_shard_is_not_fetched_again(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.open_shard("s0", items("http://x/1"))
    assert state.open_shard("s1", items("http://x/1", "http://x/9")) == items("http://x/9")


def test_an_unfinished_url_is_adopted_when_shards_are_renumbered(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.open_shard("00-urls-000000", items("http://x/1", "http://x/2"))
    state.record("http://x/1", Outcome("ok", raw_sha256="r", sha256="s"))
    state.close()  # the run ended before x/2 finished; then the user put another source first
    todo = State(tmp_path / "s.sqlite").open_shard("01-urls-000000", items("http://x/1", "http://x/2"))
    assert [i.url for i in todo] == ["http://x/2"]


def test_same_bytes_under_another_url_are_a_duplicate(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.open_shard("s0", items("http://x/1", "http://x/2", "http://x/3"))
    assert state.record("http://x/1", Outcome("ok", raw_sha256="r", sha256="s", path="p")) == "ok"
    assert state.record("http://x/2", Outcome("ok", raw_sha256="r", sha256="s", path="p")) == "duplicate_bytes"
    assert state.record("http://x/3", Outcome("ok", raw_sha256="q", sha256="t", path="p2")) == "ok"
    state.commit()
    assert state.status_counts() == {"ok": 2, "duplicate_bytes": 1}
    assert [r[0] for r in state.stored_rows()] == ["s", "t"]


def test_two_boxes_in_one_photo_are_two_rows():
    photo = "http://x/p.jpg"
    a = SourceItem(photo, "hot_dog", "openimages", box=(0.1, 0.2, 0.3, 0.4))
    b = SourceItem(photo, "hot_dog", "openimages", box=(0.5, 0.6, 0.3, 0.4))
    assert len({item_key(a), item_key(b), item_key(SourceItem(photo, "x", "urls"))}) == 3


def test_committed_outcomes_survive_an_unclean_close(tmp_path):
    path = tmp_path / "s.sqlite"
    state = State(path)
    state.open_shard("s0", items("http://x/1", "http://x/2"))
    state.record("http://x/1", Outcome("timeout", error="slow", attempts=2))
    state.commit()
    state.record("http://x/2", Outcome("ok", raw_sha256="r", sha256="s"))  # not committed: lost, stays pending
    state.db.close()  # closed mid-transaction, without commit: what a killed process leaves
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = dict(db.execute("SELECT url, status FROM urls"))
    assert rows == {"http://x/1": "timeout", "http://x/2": "pending"}
    assert [i.url for i in State(path).open_shard("s0", items("http://x/1", "http://x/2"))] == ["http://x/2"]
