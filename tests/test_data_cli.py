"""`glocal data index|check`, and the index file helpers behind it."""

from __future__ import annotations

import pytest

from glocal_lib.cli import main
from glocal_lib.data import build_index, read_index, write_index
from glocal_lib.data.cli import data_cli
from glocal_lib.data.synthetic import make_standin
from glocal_lib.errors import DataError


@pytest.fixture(scope="module")
def btad(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "btad"
    counts = make_standin("btad", root, seed=2, image_size=16)
    return root, counts


def test_index_writes_csv_outside_the_tree(btad, tmp_path, capsys):
    root, counts = btad
    out = tmp_path / "idx" / "btad.csv"
    assert data_cli(["index", "btad", "--root", str(root), "--out", str(out)]) == 0
    df = read_index(out)
    assert df["category"].tolist()[0] == "01"  # strings stay strings (not the integer 1)
    assert len(df) == int(counts["test_normal"].sum() + counts["test_anomalous"].sum())
    assert f"wrote {len(df)} rows" in capsys.readouterr().out


def test_index_default_location(btad, tmp_path, monkeypatch):
    root, _ = btad
    monkeypatch.setenv("GLOCAL_INDEX_DIR", str(tmp_path / "cache"))
    assert data_cli(["index", "BTAD", "--root", str(root)]) == 0
    (csv,) = (tmp_path / "cache").glob("btad-*.csv")
    assert len(read_index(csv)) > 0


def test_write_index_refuses_the_data_tree(btad):
    root, _ = btad
    with pytest.raises(DataError, match="inside the dataset folder"):
        write_index(build_index("btad", root), root / "index.csv", root=root)


def test_check_ok_with_expected_counts_and_fails_on_manifest_counts(btad, tmp_path, capsys):
    root, counts = btad
    exp = tmp_path / "expected.csv"
    counts[["category", "test_normal", "test_anomalous"]].to_csv(exp, index=False)
    assert data_cli(["check", "btad", "--root", str(root), "--expected", str(exp)]) == 0
    assert data_cli(["check", "btad", "--root", str(root), "--report", str(tmp_path / "r.csv")]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "wrong_count" in out and (tmp_path / "r.csv").is_file()


def test_missing_root_through_the_top_level_cli(tmp_path, capsys):
    assert main(["data", "check", "kvasir", "--root", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "dataset folder not found" in err and "nope" in err and "simula.no" in err
