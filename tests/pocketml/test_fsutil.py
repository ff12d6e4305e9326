import os

import pytest

from pocketml.fsutil import atomic_output, atomic_write_text, sha256_file, tree_bytes


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_atomic_output_keeps_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "model.bin"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("converter crashed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_atomic_output_moves_a_directory_into_place(tmp_path):
    path = tmp_path / "m.mlpackage"
    with atomic_output(path) as tmp:
        (tmp / "Data").mkdir(parents=True)
        (tmp / "Data" / "w.bin").write_bytes(b"1234")
    assert (path / "Data" / "w.bin").read_bytes() == b"1234"
    assert tree_bytes(path) == 4


def test_directory_hash_changes_when_any_file_changes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"a")
    before = sha256_file(tmp_path / "d")
    (tmp_path / "d" / "x").write_bytes(b"b")
    assert sha256_file(tmp_path / "d") != before


def test_atomic_write_gives_normal_file_permissions_not_mkstemps_0600(tmp_path):
    path = atomic_write_text(tmp_path / "report.json", "{}")
    mode = path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
