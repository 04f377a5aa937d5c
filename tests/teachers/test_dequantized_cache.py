"""The dequantized copy of a GGUF teacher is named by the file's content: the same file installed in another place (a
new virtual environment, a fresh clone) finds the copy already made instead of adding another half gigabyte."""

from __future__ import annotations

import os
import shutil

from distil.teachers.loading import dequantized_cache_path, resolve_source


def test_the_same_gguf_file_in_two_places_shares_one_cached_copy_and_another_file_does_not(tmp_path):
    first, second, other = tmp_path / "venv-a", tmp_path / "venv-b", tmp_path / "venv-c"
    for folder in (first, second, other):
        folder.mkdir()
    (first / "teacher.gguf").write_bytes(b"GGUF" + os.urandom(64))
    shutil.copyfile(first / "teacher.gguf", second / "teacher.gguf")  # another path, another modification time
    (other / "teacher.gguf").write_bytes(b"GGUF" + os.urandom(64))

    def cached(folder):
        return dequantized_cache_path(resolve_source(f"gguf:{folder}#teacher.gguf"))

    assert cached(first) == cached(second)
    assert cached(first) != cached(other)
    assert cached(first).name.startswith("teacher-")
