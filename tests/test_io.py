"""Atomic writes leave the old file or the new one, never a partial file; hashes are order-free."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from glocal_lib.io import atomic_save_with, atomic_write_json, read_yaml, remove_temporaries, stable_hash


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})

    def broken(path):
        path.write_text("{half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_save_with(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_written_files_get_normal_permissions(tmp_path):
    target = atomic_write_json(tmp_path / "sub" / "x.json", [1])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask


def test_stable_hash_ignores_key_order_but_not_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_read_yaml_refuses_python_objects(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("x: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="python/object"):
        read_yaml(bad)


def test_remove_temporaries_deletes_only_what_a_killed_atomic_write_left(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    fd, left = tempfile.mkstemp(prefix=".latest.", suffix=".pt", dir=tmp_path / "checkpoints")  # as atomic_save_with
    os.close(fd)
    keep = [tmp_path / ".gitignore", tmp_path / "metrics.json", tmp_path / ".hidden.txt"]
    for p in keep:
        p.write_text("x")
    assert remove_temporaries(tmp_path) == [Path(left)]
    assert all(p.is_file() for p in keep) and not Path(left).exists()
