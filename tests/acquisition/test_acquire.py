"""acquire() end to end against the hostile server: every URL accounted for with the right status,
no run longer than its caps allow, a pool that matches the store, and resume that redoes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
import time

import pytest
from pocketml.acquisition.acquire import POOL_COLUMNS, acquire

from pocketml.configs.acquire import AcquireConfig
from pocketml.errors import PocketMLError
from tests.acquisition.hostile_http import EXPECTED, HostileServer

DOWNLOAD = {"threads": 16, "per_host": 16, "connect_timeout": 2.0, "read_timeout": 1.0, "total_timeout": 2.0,
            "max_bytes": 2_000_000, "retries": 3, "backoff": 0.05, "backoff_max": 0.2, "max_retry_after": 5.0}


@pytest.fixture()
def server(photo_folder):
    images = sorted((photo_folder / "train" / "cat").glob("*.jpg"))[:10]
    with HostileServer(images) as srv:
        yield srv


def config_for(url_file, shard_size: int = 1000) -> AcquireConfig:
    from pocketml.config import from_mapping

    table = {"sources": [{"type": "urls", "path": str(url_file), "label": "hot_dog"}],
             "shard_size": shard_size, "workers": 2, "download": DOWNLOAD}
    return from_mapping(AcquireConfig, table, "acquire")


def statuses(out_dir) -> dict[str, str]:
    with sqlite3.connect(out_dir / "state.sqlite") as db:
        return dict(db.execute("SELECT url, status FROM urls"))


def test_hostile_server_every_url_gets_the_right_status(server, tmp_path):
    urls = [server.url(p) for p in EXPECTED]
    url_file = tmp_path / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    start = time.monotonic()
    summary = acquire(config_for(url_file, shard_size=7), tmp_path / "ds")
    elapsed = time.monotonic() - start

    got = {u.removeprefix(server.base): s for u, s in statuses(tmp_path / "ds").items()}
    # Same bytes under two URLs: whichever arrives first is kept, the other is a duplicate.
    assert sorted([got.pop("/dup/a"), got.pop("/dup/b")]) == ["duplicate_bytes", "ok"]
    assert got == {p: s for p, s in EXPECTED.items() if not p.startswith("/dup/")}
    assert summary["urls"] == len(EXPECTED) and summary["images"] == list(EXPECTED.values()).count("ok")
    assert summary["shards"] == {"done": 3, "seen": 3}
    # Caps bound the run: the slowest URL is the 2 s drip; the 1 s Retry-After and retries overlap it.
    assert elapsed < 20, elapsed
    assert json.loads((tmp_path / "ds" / "acquisition.json").read_text())["by_status"] == summary["by_status"]


def test_pool_csv_lists_exactly_the_stored_images(server, tmp_path):
    url_file = tmp_path / "list.csv"
    rows = [(server.url(f"/img/{i}"), "hot_dog" if i % 2 else "not_hot_dog") for i in range(10)]
    url_file.write_text("url,label\n" + "".join(f"{u},{label}\n" for u, label in rows))
    acquire(config_for(url_file), tmp_path / "ds")
    with open(tmp_path / "ds" / "pool.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == POOL_COLUMNS
        pool = list(reader)
    assert len(pool) == 10
    assert {(r["source_url"], r["label"]) for r in pool} == set(rows)
    for row in pool:
        data = (tmp_path / "ds" / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert int(row["width"]) > 0 and int(row["height"]) > 0


def test_rerun_resumes_without_a_single_request(server, tmp_path):
    url_file = tmp_path / "urls.txt"
    url_file.write_text("".join(server.url(f"/img/{i}") + "\n" for i in range(6)) + server.url("/missing") + "\n")
    first = acquire(config_for(url_file, shard_size=3), tmp_path / "ds")
    hits = sum(server.hits.values())
    second = acquire(config_for(url_file, shard_size=3), tmp_path / "ds")
    assert sum(server.hits.values()) == hits  # finished work (ok and failed) is never redone
    assert second["this_run"]["processed"] == 0 and second["by_status"] == first["by_status"]


def test_growing_the_list_fetches_only_the_new_urls(server, tmp_path):
    url_file = tmp_path / "urls.txt"
    url_file.write_text("".join(server.url(f"/img/{i}") + "\n" for i in range(4)))
    acquire(config_for(url_file, shard_size=2), tmp_path / "ds")
    url_file.write_text("".join(server.url(f"/img/{i}") + "\n" for i in range(8)))
    summary = acquire(config_for(url_file, shard_size=2), tmp_path / "ds")
    assert summary["this_run"]["processed"] == 4
    assert all(server.hits[f"/img/{i}"] == 1 for i in range(8))


def test_folder_source_imports_through_the_same_path(photo_folder, tmp_path):
    summary = acquire(AcquireConfig(sources=[{"type": "folder", "path": str(photo_folder)}], workers=2), tmp_path / "ds")
    assert summary["by_label"]["cat"] == {"ok": 34} and summary["by_label"]["coffee"] == {"ok": 34}
    assert summary["images"] == 68
    with open(tmp_path / "ds" / "pool.csv", newline="") as fh:
        splits = {row["split"] for row in csv.DictReader(fh)}
    assert splits == {"train", "val"}  # the ImageFolder's predefined split reaches curation


def test_bad_source_table_is_one_clear_error(tmp_path):
    with pytest.raises(PocketMLError, match="accepted types: urls, imagenet"):
        acquire(AcquireConfig(sources=[{"type": "flickr"}]), tmp_path)
    with pytest.raises(PocketMLError, match="did you mean 'path'"):
        acquire(AcquireConfig(sources=[{"type": "urls", "paht": "x.txt"}]), tmp_path)
    with pytest.raises(PocketMLError, match="no sources"):
        acquire(AcquireConfig(), tmp_path)


def cli(*argv: str) -> int:
    import argparse

    from pocketml.acquisition import cli_acquire

    parser = argparse.ArgumentParser(prog="pocketml")
    cli_acquire.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["acquire", *argv])
    return args.func(args)


def test_cli_config_file_plus_quick_options(server, tmp_path, capsys):
    (tmp_path / "urls.txt").write_text(server.url("/img/1") + "\n" + server.url("/html") + "\n")
    (tmp_path / "acquire.toml").write_text(
        f'[acquire]\nshard_size = 10\n[[acquire.sources]]\ntype = "urls"\npath = "{tmp_path / "urls.txt"}"\nlabel = "a"\n'
        '[acquire.download]\nretries = 0\n')
    assert cli(str(tmp_path / "acquire.toml"), "--out", str(tmp_path / "ds"), "--urls", str(tmp_path / "urls.txt"),
               "--label", "b", "--max-side", "64") == 0
    summary = json.loads((tmp_path / "ds" / "acquisition.json").read_text())
    assert summary["by_status"] == {"ok": 1, "not_image": 1} and summary["repeated_urls"] == 2
    assert "not_image" in capsys.readouterr().out  # the summary table
    with open(tmp_path / "ds" / "pool.csv", newline="") as fh:
        assert max(int(next(csv.DictReader(fh))["width"]), 0) <= 64


def test_cli_without_sources_says_what_to_give(tmp_path):
    with pytest.raises(PocketMLError, match="--urls/--folder"):
        cli("--out", str(tmp_path / "ds"))


def test_items_with_bytes_skip_the_download(tmp_path):
    # The glyphs source renders images locally and hands them over as SourceItem.data.
    table = {"type": "glyphs", "letters": ["A", "B"], "per_letter": 6, "image_size": 64, "system_fonts": False}
    summary = acquire(AcquireConfig(sources=[table], workers=1), tmp_path / "ds")
    with sqlite3.connect(tmp_path / "ds" / "state.sqlite") as db:
        rows = db.execute("SELECT url, status, attempts FROM urls").fetchall()
    assert len(rows) == 12 and all(attempts == 0 for _, _, attempts in rows)  # no fetch was attempted
    assert summary["images"] >= 10 and set(summary["by_label"]) == {"A", "B"}
    assert all(url.startswith("glyphs://") for url, _, _ in rows)


def test_bad_download_setting_names_key_and_accepted_values():
    from pocketml.config import from_mapping

    with pytest.raises(PocketMLError, match=r"threads = 0 is not accepted; expected an integer >= 1"):
        from_mapping(AcquireConfig, {"download": {"threads": 0}}, "acquire")
    with pytest.raises(PocketMLError, match=r"16 hex digits"):
        from_mapping(AcquireConfig, {"verify": {"placeholder_dhashes": ["flickr"]}}, "acquire")
    with pytest.raises(PocketMLError, match=r"did you mean 'per_host'"):
        from_mapping(AcquireConfig, {"download": {"per_hots": 2}}, "acquire")


def test_retry_failed_refetches_only_retryable_failures(server, tmp_path):
    url_file = tmp_path / "urls.txt"
    url_file.write_text("".join(server.url(p) + "\n" for p in EXPECTED))
    first = acquire(config_for(url_file, shard_size=7), tmp_path / "ds")
    before = dict(server.hits)
    config = config_for(url_file, shard_size=7)
    config.retry_failed = True
    again = acquire(config, tmp_path / "ds")
    asked = {path for path, n in server.hits.items() if n > before.get(path, 0)}
    # timeout, connection reset and a 503 are worth another try; a 404, HTML or a bomb never are.
    assert asked == {"/drip", "/reset", "/busy-forever"}
    assert again["this_run"]["retried_failed"] == 3 and again["this_run"]["processed"] == 3
    assert again["by_status"] == first["by_status"]


def test_a_hung_url_does_not_stretch_the_run_past_its_busy_phase(server, tmp_path):
    # The hung URL comes first; 60 URLs of 0.2 s each keep 4 threads busy for ~3 s behind it.
    url_file = tmp_path / "urls.txt"
    url_file.write_text(server.url("/drip") + "\n" + "".join(server.url(f"/slow/{i}") + "\n" for i in range(60)))
    download = {**DOWNLOAD, "threads": 4, "per_host": 4, "total_timeout": 2.0, "defer_after": 0.5,
                "late_retry_timeout": 1.0}
    from pocketml.config import from_mapping

    config = from_mapping(AcquireConfig, {"sources": [{"type": "urls", "path": str(url_file), "label": "x"}],
                                          "shard_size": 100, "workers": 1, "download": download}, "acquire")
    summary = acquire(config, tmp_path / "ds")
    assert summary["by_status"]["timeout"] == 1
    assert server.hits["/drip"] == 2  # its first attempt, then one more in a straggler batch
    run = summary["this_run"]
    assert run["busy_s"] >= 2.5, run
    assert run["tail_s"] <= download["defer_after"] + download["late_retry_timeout"] + 0.5, run
    with sqlite3.connect(tmp_path / "ds" / "state.sqlite") as db:
        (attempts,) = db.execute("SELECT attempts FROM urls WHERE url LIKE '%/drip'").fetchone()
    assert attempts == 2


def test_a_shard_hands_back_its_stragglers_instead_of_waiting_and_they_still_succeed(photo_folder, tmp_path):
    images = sorted((photo_folder / "train" / "cat").glob("*.jpg"))[:6]
    with HostileServer(images, latency=1.5) as slow:  # every answer takes 1.5 s
        url_file = tmp_path / "urls.txt"
        url_file.write_text("".join(slow.url(f"/img/{i}") + "\n" for i in range(6)))
        download = {**DOWNLOAD, "threads": 6, "per_host": 6, "read_timeout": 3.0, "total_timeout": 5.0, "defer_after": 0.3,
                    "late_retry_timeout": 4.0}
        from pocketml.config import from_mapping

        config = from_mapping(AcquireConfig, {"sources": [{"type": "urls", "path": str(url_file), "label": "x"}],
                                              "workers": 1, "download": download}, "acquire")
        summary = acquire(config, tmp_path / "ds")
        assert summary["by_status"] == {"ok": 6}
        assert all(slow.hits[f"/img/{i}"] == 2 for i in range(6))  # cut at 0.3 s, fetched whole later
    with sqlite3.connect(tmp_path / "ds" / "state.sqlite") as db:
        assert {a for (a,) in db.execute("SELECT attempts FROM urls")} == {2}
        assert db.execute("SELECT COUNT(*) FROM shards WHERE done = 1").fetchone() == (1,)


def test_executor_settings_are_validated_with_the_accepted_values(tmp_path):
    from pocketml.config import from_mapping

    with pytest.raises(PocketMLError, match=r"executor = 'spark' is not accepted; expected one of local, ray"):
        from_mapping(AcquireConfig, {"executor": "spark"}, "acquire")
    with pytest.raises(PocketMLError, match=r"set executor = \"ray\""):
        from_mapping(AcquireConfig, {"ray_address": "head:6379"}, "acquire")
    with pytest.raises(PocketMLError, match=r"cpus_per_shard = 0"):
        from_mapping(AcquireConfig, {"executor": "ray", "cpus_per_shard": 0}, "acquire")


def test_cli_retry_failed_and_executor_flags_reach_the_config(tmp_path):
    import argparse

    from pocketml.acquisition import cli_acquire

    parser = argparse.ArgumentParser(prog="pocketml")
    cli_acquire.register(parser.add_subparsers(dest="command"))
    (tmp_path / "urls.txt").write_text("http://127.0.0.1:9/a.jpg\n")
    args = parser.parse_args(["acquire", "--out", str(tmp_path / "ds"), "--urls", str(tmp_path / "urls.txt"),
                              "--retry-failed", "--ray-address", "127.0.0.1:6379"])
    config = cli_acquire.config_of(args)
    assert config.retry_failed and config.executor == "ray" and config.ray_address == "127.0.0.1:6379"
    args = parser.parse_args(["acquire", "--out", str(tmp_path / "ds"), "--urls", str(tmp_path / "urls.txt")])
    assert cli_acquire.config_of(args).executor == "local"
