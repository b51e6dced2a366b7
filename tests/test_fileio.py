"""paddle_models.fileio: the one atomic-write helper (whole file or the old one, never a partial one)."""
import json
import os

import pytest

from paddle_models.fileio import (
    atomic_write,
    new_temp_folder,
    replace_folder,
    temp_path,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_atomic_write_replaces_the_file_only_when_the_block_ends(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old", encoding="utf-8")
    with atomic_write(str(p)) as f:
        f.write("new ü")
        assert p.read_text(encoding="utf-8") == "old"  # not yet replaced
        assert os.path.exists(temp_path(str(p)))
    assert p.read_text(encoding="utf-8") == "new ü"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_a_failing_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(str(p), "wb") as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_helpers_write_text_bytes_and_json(tmp_path):
    write_text_atomic(str(tmp_path / "t"), "line\n")
    write_bytes_atomic(str(tmp_path / "b"), b"\x00\x01", fsync=True)
    write_json_atomic(str(tmp_path / "j.json"), {"ä": [1, 2]}, indent=1)
    assert (tmp_path / "t").read_text() == "line\n"
    assert (tmp_path / "b").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "j.json").read_text(encoding="utf-8")) == {"ä": [1, 2]}
    assert "ä" in (tmp_path / "j.json").read_text(encoding="utf-8")  # not escaped


def test_the_new_file_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(str(tmp_path / "p"), "x")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "p").st_mode & 0o777) == 0o644


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_write(str(tmp_path / "x"), "a"):
            pass


def test_a_folder_built_beside_its_target_replaces_it_whole(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (tmp_path / "ckpt.tmp").mkdir()
    (tmp_path / "ckpt.tmp" / "stale.txt").write_text("from an interrupted write")
    tmp = new_temp_folder(str(target))
    assert tmp == str(target) + ".tmp" and os.listdir(tmp) == []  # the leftover is gone
    (target.parent / "ckpt.tmp" / "new.txt").write_text("new")
    assert (target / "old.txt").read_text() == "old"  # untouched until the swap
    replace_folder(tmp, str(target))
    assert os.listdir(target) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no .tmp, no .prev


def test_replace_folder_without_a_previous_one_and_with_a_stale_prev(tmp_path):
    target = str(tmp_path / "out")
    os.makedirs(target + ".prev")  # left by a swap killed between its two renames
    tmp = new_temp_folder(target)
    write_text_atomic(os.path.join(tmp, "a"), "1")
    replace_folder(tmp, target)
    assert os.listdir(target) == ["a"] and sorted(os.listdir(tmp_path)) == ["out"]
    tmp = new_temp_folder(target)
    write_text_atomic(os.path.join(tmp, "b"), "2")
    os.makedirs(target + ".prev")
    replace_folder(tmp, target)
    assert os.listdir(target) == ["b"] and sorted(os.listdir(tmp_path)) == ["out"]
