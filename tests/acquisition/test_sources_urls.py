"""URL lists: text, CSV/TSV, fall11; plain, gzip, tgz; streamed, never loaded whole."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc

import pytest
from pocketml.acquisition.sources import make_source

from pocketml.errors import PocketMLError


def urls_of(table: dict) -> list[tuple[str, str]]:
    return [(i.url, i.label) for i in make_source({"type": "urls", **table}).items()]


def test_text_list_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("# my hot dogs\nhttp://a/1.jpg\n\n  https://b/2.jpg  \n")
    assert urls_of({"path": str(path), "label": "hot_dog"}) == [("http://a/1.jpg", "hot_dog"), ("https://b/2.jpg", "hot_dog")]


def test_csv_and_tsv_take_url_and_label_columns(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("id,url,label\n1,http://a/1.jpg,hot_dog\n2,\"http://a/2.jpg?x=1,2\",not_hot_dog\n")
    assert urls_of({"path": str(csv_path)}) == [("http://a/1.jpg", "hot_dog"), ("http://a/2.jpg?x=1,2", "not_hot_dog")]
    tsv_path = tmp_path / "list.tsv"
    tsv_path.write_text("link\tclass\nhttp://a/3.jpg\tpizza\n")
    assert urls_of({"path": str(tsv_path), "url_column": "link", "label_column": "class"}) == [("http://a/3.jpg", "pizza")]


def test_missing_url_column_names_the_columns(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("link,label\nhttp://a/1.jpg,x\n")
    with pytest.raises(PocketMLError, match=r"no 'url' column; columns are \['link', 'label'\]"):
        urls_of({"path": str(path)})


FALL11 = "n07697537_1\thttp://farm1.static.flickr.com/1/a.jpg\nn07697537_2\thttp://x/b.jpg\nn02084071_7\thttp://x/dog.jpg\n"


def test_fall11_format_is_detected_and_filtered_by_wnid_in_gzip(tmp_path):
    path = tmp_path / "fall11_urls.txt.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(FALL11)
    assert urls_of({"path": str(path), "wnids": ["n07697537"]}) == [
        ("http://farm1.static.flickr.com/1/a.jpg", "n07697537"), ("http://x/b.jpg", "n07697537")]
    assert urls_of({"path": str(path), "label": "animal", "wnids": ["n02084071"]}) == [("http://x/dog.jpg", "animal")]


def test_tgz_members_are_streamed_in_order(tmp_path):
    path = tmp_path / "imagenet_fall11_urls.tgz"
    data = FALL11.encode()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("fall11_urls.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert [u for u, _ in urls_of({"path": str(path)})] == ["http://farm1.static.flickr.com/1/a.jpg", "http://x/b.jpg",
                                                             "http://x/dog.jpg"]


def test_a_huge_list_is_streamed_not_loaded(tmp_path):
    path = tmp_path / "big.txt.gz"
    lines = 250_000  # ~11 MB of text
    with gzip.open(path, "wt", compresslevel=1) as fh:
        fh.writelines(f"http://example.com/images/{i:09d}/photo.jpg\n" for i in range(lines))
    source = make_source({"type": "urls", "path": str(path), "label": "x"})
    tracemalloc.start()
    count = sum(1 for _ in source.items())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == lines
    assert peak < 2_000_000  # bytes: a fixed read buffer, not the 11 MB list


def test_limit_and_missing_file(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("http://a/1\nhttp://a/2\nhttp://a/3\n")
    assert len(urls_of({"path": str(path), "limit": 2})) == 2
    with pytest.raises(PocketMLError, match="does not exist"):
        urls_of({"path": str(tmp_path / "nope.txt")})


def test_folder_source_one_label_per_subfolder(photo_folder):
    items = list(make_source({"type": "folder", "path": str(photo_folder / "train")}).items())
    assert {i.label for i in items} == {"cat", "coffee"}
    assert all(i.url.startswith("file:///") and i.source == "folder" for i in items)
    both_splits = list(make_source({"type": "folder", "path": str(photo_folder), "labels": ["cat"]}).items())
    assert len(both_splits) == 34 and {i.label for i in both_splits} == {"cat"}
    assert {i.split for i in both_splits} == {"train", "val"}  # the folder's own split travels with each image
    assert all(f"/{i.split}/cat/" in i.url for i in both_splits)
    assert {i.split for i in items} == {None}  # pointed at train/ itself: no split level


def test_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(PocketMLError, match="no class subfolders"):
        list(make_source({"type": "folder", "path": str(tmp_path)}).items())
