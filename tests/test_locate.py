"""One lookup for env var -> repository -> packaged files, used by manifests, published values, weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from glocal_lib.data import registry
from glocal_lib.errors import ConfigError, DataError, WeightsError
from glocal_lib.experiments import paper_values
from glocal_lib.locate import env_dir, find_file, first_dir
from glocal_lib.model.backbone import WEIGHTS_DIR_ENV, resolve_weights_path


def test_env_dir_unset_empty_or_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GLOCAL_X", raising=False)
    assert env_dir("GLOCAL_X") is None
    monkeypatch.setenv("GLOCAL_X", "  ")
    assert env_dir("GLOCAL_X") is None
    monkeypatch.setenv("GLOCAL_X", str(tmp_path))
    assert env_dir("GLOCAL_X") == tmp_path
    monkeypatch.setenv("GLOCAL_X", str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"GLOCAL_X=.*typo is not a folder"):
        env_dir("GLOCAL_X", error=DataError)


def test_first_dir_takes_the_env_then_the_first_default_holding_files(tmp_path, monkeypatch):
    empty, full, other = tmp_path / "empty", tmp_path / "full", tmp_path / "other"
    for d in (empty, full, other):
        d.mkdir()
    (full / "a.csv").write_text("x")
    (other / "b.csv").write_text("x")
    monkeypatch.delenv("GLOCAL_X", raising=False)
    assert first_dir("GLOCAL_X", (tmp_path / "absent", empty, full, other), holding="*.csv", what="CSVs") == full
    monkeypatch.setenv("GLOCAL_X", str(empty))  # the user's folder wins, even if empty
    assert first_dir("GLOCAL_X", (full,), holding="*.csv", what="CSVs") == empty
    monkeypatch.delenv("GLOCAL_X")
    with pytest.raises(ConfigError, match=r"no CSVs found in .*empty.*set GLOCAL_X"):
        first_dir("GLOCAL_X", (empty,), holding="*.csv", what="CSVs")


def test_find_file_order_and_what_was_searched(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "w.pt").write_text("x")
    assert find_file("w.pt", (None, a, b)) == (b / "w.pt", [a / "w.pt", b / "w.pt"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pt").write_text("here")
    assert find_file("w.pt", (b,))[0] == b / "w.pt"  # a bare name is not looked up in the cwd...
    assert find_file("w.pt", (b,), as_path=True)[0] == Path("w.pt")  # ...unless it is a path
    assert find_file(a / "w.pt", (b,), as_path=True) == (None, [a / "w.pt"])  # absolute: only as is


def test_the_three_lookups_share_it(tmp_path, monkeypatch):
    bad = str(tmp_path / "typo")
    monkeypatch.setenv(registry.ENV_VAR, bad)
    with pytest.raises(DataError, match="GLOCAL_MANIFESTS=.*not a folder"):
        registry.manifest_dir()
    monkeypatch.setenv(paper_values.ENV_VAR, bad)
    with pytest.raises(ConfigError, match="GLOCAL_PAPER_DIR=.*not a folder"):
        paper_values.paper_dir()
    monkeypatch.setenv(WEIGHTS_DIR_ENV, bad)
    with pytest.raises(WeightsError, match="GLOCAL_WEIGHTS_DIR=.*not a folder"):
        resolve_weights_path("ViT-L-14-336px.pt")
    existing = tmp_path / "w.pt"
    existing.write_text("x")
    assert resolve_weights_path(existing) == existing  # a path needs no folder, even a bad one
    monkeypatch.delenv(paper_values.ENV_VAR)
    assert paper_values.paper_file("glocalclip_table1.csv").is_file()
    with pytest.raises(ConfigError, match="nope.csv not found"):
        paper_values.paper_file("nope.csv")
