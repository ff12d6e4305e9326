"""The acquisition state database: one row per URL with its outcome, in SQLite (WAL).

It is the only memory of a run. A URL row is written `pending` when its shard starts and gets a
final status when its outcome is known; a rerun skips finished shards and finished URLs, so
nothing finished is redone, and a kill -9 loses at most the outcomes not yet committed (those
URLs are simply still `pending`). WAL with synchronous=NORMAL is safe against process kills.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pocketml.acquisition.sources.base import SourceItem

PENDING = "pending"
OK = "ok"
DUPLICATE = "duplicate_bytes"
# Outcomes another try may change: the server or the network was at fault, not the URL.
RETRYABLE_STATUSES = ("timeout", "connection_error")
RETRYABLE_HTTP = (408, 425, 429, 500, 502, 503, 504)

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    key TEXT PRIMARY KEY,          -- the URL, plus the box for an Open Images crop
    url TEXT NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    split TEXT,                    -- a split the source defines (train/val/test), else NULL
    shard TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    bytes INTEGER NOT NULL DEFAULT 0,
    raw_sha256 TEXT,               -- of the downloaded bytes (duplicate_bytes detection)
    sha256 TEXT,                   -- of the stored, re-encoded image
    path TEXT,
    width INTEGER,
    height INTEGER,
    final_url TEXT,
    updated REAL
);
CREATE INDEX IF NOT EXISTS urls_shard ON urls(shard, status);
CREATE INDEX IF NOT EXISTS urls_raw ON urls(raw_sha256);
CREATE INDEX IF NOT EXISTS urls_sha ON urls(sha256);
CREATE TABLE IF NOT EXISTS shards (
    shard TEXT PRIMARY KEY,
    items INTEGER NOT NULL,
    repeated INTEGER NOT NULL DEFAULT 0, -- items whose URL an earlier row already holds
    done INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Outcome:
    status: str
    error: str = ""
    attempts: int = 0
    http_status: int | None = None
    bytes: int = 0
    raw_sha256: str | None = None
    sha256: str | None = None
    path: str | None = None
    width: int | None = None
    height: int | None = None
    final_url: str | None = None


def item_key(item: SourceItem) -> str:
    """One key per thing to fetch: two boxes in one Open Images photo are two rows."""
    if item.box is None:
        return item.url
    box = ",".join(f"{v:.6f}" for v in item.box)
    return f"{item.url}#box={box};rot={item.rotation}"


class State:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._in_tx = False
        self._opened: set[str] = set()  # shards opened by this run (their pending URLs are in flight)

    def close(self) -> None:
        self.commit()
        self.db.close()

    def begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def shard_done(self, shard: str) -> bool:
        row = self.db.execute("SELECT done FROM shards WHERE shard = ?", (shard,)).fetchone()
        return bool(row and row[0])

    def open_shard(self, shard: str, items: list[SourceItem]) -> list[SourceItem]:
        """Record the shard's items (once) and return those still to do, in order."""
        self.begin()
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO urls (key, url, label, source, split, shard, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(item_key(i), i.url, i.label, i.source, i.split, shard, time.time()) for i in items],
        )
        repeated = len(items) - (self.db.total_changes - before)
        self._adopt_strays(shard, [item_key(i) for i in items])
        self.db.execute(
            "INSERT INTO shards (shard, items, repeated) VALUES (?, ?, ?) ON CONFLICT(shard) DO NOTHING",
            (shard, len(items), repeated),
        )
        pending = {k for (k,) in self.db.execute("SELECT key FROM urls WHERE shard = ? AND status = ?", (shard, PENDING))}
        self.commit()
        todo, seen = [], set()
        for item in items:
            key = item_key(item)
            if key in pending and key not in seen:
                seen.add(key)
                todo.append(item)
        return todo

    def _adopt_strays(self, shard: str, keys: list[str]) -> None:
        """Take over unfinished URLs a previous run filed under another shard id (the source list
        changed order), so they cannot be stranded as pending; never those of a shard this run
        opened, which are in flight right now."""
        self._opened.add(shard)
        strays = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT key, shard FROM urls WHERE status = ? AND key IN ({marks})", (PENDING, *chunk))
            strays += [key for key, owner in rows if owner not in self._opened]
        self.db.executemany("UPDATE urls SET shard = ? WHERE key = ?", [(shard, key) for key in strays])

    def reopen_retryable(self) -> int:
        """Mark URLs whose last outcome was retryable pending again, and their shards unfinished, so
        the next pass fetches exactly those; returns how many. DNS and certificate failures are
        connection errors too, but retrying them cannot help."""
        self.begin()
        where = (f"(status IN ({','.join('?' * len(RETRYABLE_STATUSES))}) AND error NOT LIKE 'gaierror%' "
                 "AND error NOT LIKE 'SSLCertVerificationError%') OR (status = 'http_error' AND http_status IN "
                 f"({','.join('?' * len(RETRYABLE_HTTP))}))")
        args = (*RETRYABLE_STATUSES, *RETRYABLE_HTTP)
        self.db.execute(f"UPDATE shards SET done = 0 WHERE shard IN (SELECT DISTINCT shard FROM urls WHERE {where})", args)
        reopened = self.db.execute(f"UPDATE urls SET status = ?, updated = ? WHERE {where}",
                                   (PENDING, time.time(), *args)).rowcount
        self.commit()
        return reopened

    def reopen_changed(self, current: dict[str, str]) -> int:
        """Mark finished URLs whose bytes are no longer the ones read (`current`: key -> sha256 of what
        the URL holds now; local photos only) pending again, and their shards unfinished; returns how
        many. A photo replaced under the same name is read again, not kept from its first reading."""
        changed = [key for key, raw in self.db.execute("SELECT key, raw_sha256 FROM urls WHERE status != ?", (PENDING,))
                   if key in current and raw != current[key]]
        if not changed:
            return 0
        self.begin()
        for key in changed:
            self.db.execute("UPDATE shards SET done = 0 WHERE shard = (SELECT shard FROM urls WHERE key = ?)", (key,))
            self.db.execute("UPDATE urls SET status = ?, updated = ? WHERE key = ?", (PENDING, time.time(), key))
        self.commit()
        return len(changed)

    def finish_shard(self, shard: str) -> None:
        self.begin()
        self.db.execute("UPDATE shards SET done = 1 WHERE shard = ?", (shard,))
        self.commit()

    def record(self, key: str, outcome: Outcome) -> str:
        """Store an outcome (inside the open transaction); returns the status actually recorded."""
        self.begin()
        if outcome.status == OK and self._duplicate_of(key, outcome):
            outcome = Outcome(**{**outcome.__dict__, "status": DUPLICATE,
                                 "error": f"same bytes as {self._duplicate_of(key, outcome)}", "path": None})
        self.db.execute(
            """UPDATE urls SET status=?, error=?, attempts=attempts+?, http_status=?, bytes=?, raw_sha256=?,
               sha256=?, path=?, width=?, height=?, final_url=?, updated=? WHERE key=?""",
            (outcome.status, outcome.error[:500], outcome.attempts, outcome.http_status, outcome.bytes,
             outcome.raw_sha256, outcome.sha256, outcome.path, outcome.width, outcome.height,
             outcome.final_url, time.time(), key),
        )
        return outcome.status

    def _duplicate_of(self, key: str, outcome: Outcome) -> str | None:
        row = self.db.execute(
            "SELECT key FROM urls WHERE status = ? AND key != ? AND (raw_sha256 = ? OR sha256 = ?) LIMIT 1",
            (OK, key, outcome.raw_sha256, outcome.sha256),
        ).fetchone()
        return row[0] if row else None

    def status_counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM urls GROUP BY status ORDER BY COUNT(*) DESC")
        return dict(rows.fetchall())

    def label_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for label, status, n in self.db.execute("SELECT label, status, COUNT(*) FROM urls GROUP BY label, status"):
            out.setdefault(label, {})[status] = n
        return out

    def repeated_urls(self) -> int:
        return self.db.execute("SELECT COALESCE(SUM(repeated), 0) FROM shards").fetchone()[0]

    def shard_counts(self) -> tuple[int, int]:
        """(finished shards, all shards seen)."""
        return self.db.execute("SELECT COALESCE(SUM(done), 0), COUNT(*) FROM shards").fetchone()

    def stored_rows(self) -> Iterator[tuple]:
        """(sha256, path, label, source, url, width, height, split) of every kept image, in arrival order."""
        yield from self.db.execute(
            "SELECT sha256, path, label, source, url, width, height, COALESCE(split, '') FROM urls "
            "WHERE status = ? ORDER BY rowid", (OK,)
        )

    def rows(self, keys: Iterable[str] | None = None) -> list[dict]:
        cur = self.db.execute("SELECT * FROM urls ORDER BY rowid")
        names = [d[0] for d in cur.description]
        wanted = set(keys) if keys is not None else None
        return [dict(zip(names, r, strict=True)) for r in cur if wanted is None or r[0] in wanted]
