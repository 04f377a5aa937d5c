import json
import os

import pytest

from distil.files import replace_dir_atomic, write_json_atomic, write_text_atomic, write_with_atomic


def test_text_and_json_land_whole_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_failed_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.parquet"
    target.write_text("old")

    def broken(path):
        path.write_text("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_with_atomic(target, broken)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.parquet"]


def test_replace_dir_swaps_whole_folder_and_survives_a_crash(tmp_path):
    target = tmp_path / "model"
    replace_dir_atomic(target, lambda d: (d / "w.bin").write_text("v1"))
    assert (target / "w.bin").read_text() == "v1"

    def broken(d):
        (d / "w.bin").write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        replace_dir_atomic(target, broken)
    assert (target / "w.bin").read_text() == "v1"
    replace_dir_atomic(target, lambda d: (d / "x.bin").write_text("v2"))
    assert sorted(p.name for p in target.iterdir()) == ["x.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
