"""Bad inputs as a new user makes them (issue 10, items 5, 7 and 8): each gives a clear error or a
visible warning naming the file or parameter and the fix, never a silent result or a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from glocal_lib.cli import main
from glocal_lib.data import build_index, read_index, read_meta_json, validate_dataset, write_index
from glocal_lib.data.dataset import load_mask, load_rgb
from glocal_lib.data.index import DataWarning
from glocal_lib.data.synthetic import make_standin
from glocal_lib.errors import ConfigError, DataError, WeightsError
from glocal_lib.io import read_yaml

TWO = ["bottle", "cable"]


def _png(path: Path, value: int = 0, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


def _tree(root: Path, cats=TWO) -> Path:
    """A minimal MVTec-style tree: per category 2 good + 2 broken images with masks."""
    for cat in cats:
        (root / cat / "train" / "good").mkdir(parents=True)
        for i in range(2):
            _png(root / cat / f"test/good/{i:03d}.png")
            _png(root / cat / f"test/broken/{i:03d}.png")
            _png(root / cat / f"ground_truth/broken/{i:03d}_mask.png", 255)
    return root


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "mvtec"
    make_standin("mvtec", root, seed=1, image_size=16)
    return root


@pytest.fixture
def copy(standin, tmp_path):
    dst = tmp_path / "data" / "mvtec"
    shutil.copytree(standin, dst)
    return dst


# ------------------------------------------------------------------ item 5: silent wrong results
def test_empty_category_is_an_error_naming_it(tmp_path, copy, capsys):
    root = _tree(tmp_path / "mvtec")
    for f in (root / "cable").rglob("*.png"):
        f.unlink()
    with pytest.raises(DataError, match=r"empty_category.*cable/: category 'cable' has no test images"):
        build_index("mvtec", root, categories=TWO)
    # through the CLI: non-zero exit and the category named (it exited 0 silently before)
    for f in (copy / "screw" / "test").rglob("*.png"):
        f.unlink()
    assert main(["data", "index", "mvtec", "--root", str(copy), "--out", str(tmp_path / "i.csv")]) == 1
    err = capsys.readouterr().err
    assert "screw" in err and "no test images" in err and "restore it from the archive" in err
    assert not (tmp_path / "i.csv").exists()


def test_single_label_category_is_a_visible_warning(tmp_path, copy, capsys):
    root = _tree(tmp_path / "mvtec")
    shutil.rmtree(root / "cable" / "test" / "broken")
    shutil.rmtree(root / "cable" / "ground_truth")
    with pytest.warns(DataWarning, match=r"only normal images in category 'cable'.*undefined"):
        df = build_index("mvtec", root, categories=TWO)
    assert set(df["category"]) == set(TWO)
    shutil.rmtree(copy / "zipper" / "test" / "good")
    assert main(["data", "index", "mvtec", "--root", str(copy), "--out", str(tmp_path / "i.csv")]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "only anomalous images in category 'zipper'" in out


# TIFFs as medical sets store them; expected values computed here, independently of the loader
GRADIENT = np.linspace(0, 1, 48 * 64, dtype=np.float64).reshape(48, 64)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return np.clip(np.round((a - a.min()) / (a.max() - a.min()) * 255), 0, 255)


@pytest.mark.parametrize("name,array,expected", [
    ("float01", GRADIENT.astype(np.float32), np.round(GRADIENT.astype(np.float32) * 255.0)),
    ("hounsfield", (GRADIENT * 4000 - 1000).astype(np.float32), None),
    ("int32", (GRADIENT * 100000).astype(np.int32), None),
    ("uint16_12bit", (GRADIENT * 4095).astype(np.uint16), None),
    ("uint16_8bit_range", (GRADIENT * 200).astype(np.uint16), np.round(GRADIENT * 200).astype(np.float64)),
])
def test_wide_tiffs_decode_to_their_range(tmp_path, name, array, expected):
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, array)
    with Image.open(path) as im:
        assert im.mode in ("F", "I", "I;16")  # the modes PIL's convert('RGB') clips to black/white
    out = np.asarray(load_rgb(path)).astype(np.float64)
    want = _minmax(array) if expected is None else expected
    assert out.shape == (48, 64, 3) and (out[..., 0] == out[..., 2]).all()
    np.testing.assert_allclose(out[..., 0], want, atol=1)
    assert out.std() > 40 or name == "uint16_8bit_range"  # not all-black/all-white


def test_pil_written_float_tiff_and_float_mask(tmp_path):
    Image.fromarray(GRADIENT.astype(np.float32), mode="F").save(tmp_path / "f.tif")
    assert np.asarray(load_rgb(tmp_path / "f.tif")).max() == 255
    mask = np.zeros((20, 20), np.float32)
    mask[5:15, 5:15] = 0.4  # a float mask: converting it to 'L' would round it to 0
    tifffile.imwrite(tmp_path / "m.tif", mask)
    assert load_mask(tmp_path / "m.tif", 20).sum() == 100


def test_paths_escaping_the_root_are_refused_with_file_and_line(tmp_path):
    root = _tree(tmp_path / "mvtec")
    idx = build_index("mvtec", root, categories=TWO)
    csv = write_index(idx, tmp_path / "index.csv")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[1, "image_path"] = "../../outside/secret.png"
    df.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"index\.csv row 1 \(CSV line 3\), image_path: \.\./\.\./outside"):
        read_index(csv)
    bad = idx.copy()
    bad.loc[2, "mask_path"] = "bottle/../../x.png"
    with pytest.raises(DataError, match="outside the dataset root"):
        write_index(bad, tmp_path / "other.csv")
    meta = {"train": {}, "test": {"bottle": [
        {"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "bottle", "specie_name": "good",
         "anomaly": 0},
        {"img_path": "../elsewhere/001.png", "mask_path": "", "cls_name": "bottle", "specie_name": "good",
         "anomaly": 0}]}}
    text = json.dumps(meta, indent=4)
    (root / "meta.json").write_text(text)
    line = text.splitlines().index('                "img_path": "../elsewhere/001.png",') + 1
    with pytest.raises(DataError, match=rf"meta\.json line {line}, img_path: \.\./elsewhere/001\.png points outside"):
        read_meta_json(root, "mvtec")
    (root / "meta.json").write_text(text.replace("../elsewhere/001.png", "/srv/other/secret.png"))
    with pytest.raises(DataError, match=rf"meta\.json line {line}: absolute path /srv/other/secret\.png is not under"):
        read_meta_json(root, "mvtec")


# ------------------------------------------------------------------ item 7: faults with a clear message
def test_symlink_loops_are_named_not_followed(copy, tmp_path):
    os.symlink("self", copy / "bottle" / "test" / "good" / "self")  # ELOOP when stat'ed
    os.symlink(".", copy / "bottle" / "test" / "loop")  # a folder cycle
    t = time.perf_counter()
    with pytest.raises(DataError, match=r"unreadable_entry\] bottle/test/good/self: cannot be followed"):
        build_index("mvtec", copy)
    report = validate_dataset("mvtec", copy, raise_on_error=False)
    assert time.perf_counter() - t < 30
    assert any(i.kind == "unreadable_entry" and i.file == "bottle/test/good/self" for i in report.errors)
    assert main(["data", "check", "mvtec", "--root", str(copy)]) == 1


def test_malformed_expected_and_index_files(copy, tmp_path, capsys):
    exp = tmp_path / "expected.csv"
    exp.write_text("category,test_normal,test_anomalous\nbottle,20,abc\n")
    assert main(["data", "check", "mvtec", "--root", str(copy), "--expected", str(exp)]) == 1
    err = capsys.readouterr().err
    assert "expected.csv line 2, test_anomalous: 'abc' is not a whole number" in err and "Traceback" not in err
    exp.write_text("category,test_normal,test_anomalous\nbottel,20,63\n")
    assert main(["data", "check", "mvtec", "--root", str(copy), "--expected", str(exp)]) == 1
    assert "the expected counts name 'bottel', which is not a MVTec AD category" in capsys.readouterr().out
    exp.write_text("category;normal\nbottle;20\n")
    assert main(["data", "check", "mvtec", "--root", str(copy), "--expected", str(exp)]) == 1
    assert "lacks the column(s) category, test_normal, test_anomalous (has category;normal)" in capsys.readouterr().err
    exp.write_bytes(bytes(range(256)) * 8)
    assert main(["data", "check", "mvtec", "--root", str(copy), "--expected", str(exp)]) == 1
    assert "expected.csv" in capsys.readouterr().err
    idx = tmp_path / "index.csv"
    idx.write_text("image_path,mask_path,category,label,defect_type,split\nbottle/test/good/000.png,,bottle,yes,good,"
                   "test\n")
    assert main(["data", "check", "mvtec", "--root", str(copy), "--index", str(idx)]) == 1
    assert "index.csv row 0 (CSV line 2), label: 'yes' is not 0 or 1" in capsys.readouterr().err
    idx.write_text('a,"b\nc')
    assert main(["data", "check", "mvtec", "--root", str(copy), "--index", str(idx)]) == 1
    assert "index.csv" in capsys.readouterr().err


@pytest.mark.parametrize("field,value,needle", [
    ("anomaly", "yes", "anomaly: 'yes' is not 0 or 1"),
    ("anomaly", 2, "anomaly: 2 is not 0 or 1"),
    ("cls_name", 3, "cls_name: 3 must be a string"),
])
def test_meta_json_bad_values_name_file_line_field(tmp_path, field, value, needle):
    root = _tree(tmp_path / "mvtec")
    rec = {"img_path": "bottle/test/broken/000.png", "mask_path": "bottle/ground_truth/broken/000_mask.png",
           "cls_name": "bottle", "specie_name": "broken", "anomaly": 1}
    meta = {"train": {}, "test": {"bottle": [dict(rec, img_path="bottle/test/good/000.png", anomaly=0,
                                                  mask_path="", specie_name="good"), {**rec, field: value}]}}
    text = json.dumps(meta, indent=4)
    (root / "meta.json").write_text(text)
    line = text.splitlines().index('                "img_path": "bottle/test/broken/000.png",') + 1
    with pytest.raises(DataError, match=f"meta.json line {line}, {needle}"):
        read_meta_json(root, "mvtec")


def test_yaml_constructor_tags_are_refused_with_file_and_line(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"a: 1\nb: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"unsafe YAML .* at .*bad\.yaml line 2"):
        read_yaml(bad)
    assert not marker.exists()
    (tmp_path / "broken.yaml").write_text("a: [1,\nb: 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at .*broken\.yaml line 3"):
        read_yaml(tmp_path / "broken.yaml")
    # a user's manifest folder with such a file: the CLI says so in one line
    manifests = tmp_path / "manifests"
    shutil.copytree(Path(__file__).resolve().parents[1] / "data_manifests", manifests)
    (manifests / "mvtec.yaml").write_text(bad.read_text())
    monkeypatch.setenv("GLOCAL_MANIFESTS", str(manifests))
    proc = subprocess.run([sys.executable, "-m", "glocal_lib.cli", "data", "check", "mvtec", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 1 and "unsafe YAML" in proc.stderr and "mvtec.yaml line 2" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


class Unpicklable:
    """Any class: torch.load(weights_only=True) refuses it (and torch's message advises weights_only=False)."""


def test_random_bytes_as_weights_never_relay_torchs_advice(tmp_path):
    from glocal_lib.model.backbone import load_clip

    path = tmp_path / "downloaded.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    torch.save({"visual.proj": torch.zeros(1), "obj": Unpicklable()}, tmp_path / "evil.pt")
    for p in (path, tmp_path / "evil.pt"):
        with pytest.raises(WeightsError) as err:
            load_clip("ViT-B-16", weights=str(p))
        msg = str(err.value)
        assert f"{p} is not a CLIP weight file" in msg and "expected an openai" in msg.lower()
        assert "weights_only" not in msg and "Traceback" not in msg


def test_root_one_level_too_high_is_detected(copy, capsys):
    for root in (copy.parent, ):  # /data instead of /data/mvtec
        with pytest.raises(DataError, match=rf"did you mean --root {copy}\?"):
            build_index("mvtec", root)
        report = validate_dataset("mvtec", root, raise_on_error=False)
        assert report.errors[0].kind == "wrong_root" and str(copy) in report.errors[0].message
    wrapper = copy.parent / "mvtec_anomaly_detection"  # the archive's folder holding mvtec/
    wrapper.mkdir()
    shutil.move(copy, wrapper / "mvtec")
    assert main(["data", "index", "mvtec", "--root", str(wrapper)]) == 1
    assert f"--root {wrapper / 'mvtec'}" in capsys.readouterr().err


@pytest.mark.parametrize("key,cats,names", [("mvtec", TWO, ("003.png", "003.PNG")), ("mvtec", TWO, ("a.png", "A.png")),
                                            ("btad", ["01", "02"], ("003.png", "003.bmp"))])
def test_duplicate_stems_up_to_case_or_extension_are_named(tmp_path, key, cats, names):
    root = _tree(tmp_path / key, cats)
    folder = root / cats[0] / "test" / "good"
    for n in names:
        _png(folder / n)
    if len(list(folder.iterdir())) < 4:
        pytest.skip("case-insensitive file system")
    with pytest.raises(DataError, match="duplicate_stem") as err:
        build_index(key, root, categories=cats)
    assert all(f"{cats[0]}/test/good/{n}" in str(err.value) for n in names), err.value
    if key == "mvtec":  # masks too (same stem, other extension: already a duplicate_mask error)
        mask_root = _tree(tmp_path / "m2", cats)
        _png(mask_root / cats[0] / "ground_truth/broken/000_MASK.png", 255)
        with pytest.raises(DataError, match=r"duplicate_stem.*000_MASK\.png, .*ground_truth/broken/000_mask\.png"):
            build_index(key, mask_root, categories=cats)


# ------------------------------------------------------------------ notebook parameters
def test_unknown_and_mistyped_notebook_parameters_are_refused():
    from glocal_lib.experiments.parameters import (
        check_notebook_parameters,
        check_parameters,
        parameter_defaults,
    )

    ok = dict(parameter_defaults())
    assert check_parameters(ok) == ok
    with pytest.raises(ConfigError, match=r"unknown notebook parameter 'dataset' \(did you mean 'datasets'\?\).*"
                                          r"known ones are: profile, preset, datasets"):
        check_parameters({**ok, "dataset": "visa"})
    for name, value, accepted in [("progress", "yes", "True or False"), ("precision", "fp64", "fp32, bf16, fp16"),
                                  ("datasets", 3, "a list of names"), ("profile", "smok", "smoke, paper"),
                                  ("results_root", 5, "None or a string")]:
        with pytest.raises(ConfigError, match=rf"{name} = .* is not valid; expected .*{accepted}"):
            check_parameters({**ok, name: value})
    # the notebook namespace: imports, IPython's variables and the cells' own results are not parameters
    namespace = {**ok, "In": [""], "Out": {}, "_i1": "x", "display": print, "np": np, "ids": ["T1"], "data": {}}
    assert check_notebook_parameters(namespace) == ok
    with pytest.raises(ConfigError, match="'dataset'"):
        check_notebook_parameters({**namespace, "dataset": "visa"})


def test_committed_notebooks_check_their_parameters_first():
    from glocal_lib.experiments.notebooks import NOTEBOOK_ORDER, read_source, source_path

    for name in NOTEBOOK_ORDER:
        nb_path = source_path(name)
        nb = read_source(nb_path)
        first = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
        assert "repro = open_notebook(globals())" in first.source, nb_path  # checks the parameters first


@pytest.mark.slow
def test_papermill_typo_fails_the_notebook_with_a_short_message(tmp_path):
    from glocal_lib.experiments.reproduce import NotebookFailed, run_notebooks

    with pytest.raises(NotebookFailed, match="unknown notebook parameter 'dataset'"):
        run_notebooks(["00_data"], {"dataset": "visa"}, tmp_path / "out", echo=False)
    import nbformat

    nb = nbformat.read(tmp_path / "out" / "notebooks" / "00_data.FAILED.ipynb", as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "ConfigError" and len(errors[0].traceback) == 2
    assert not list((tmp_path / "out").rglob("runs"))  # nothing ran


def test_reproduce_checks_the_parameters_it_passes(monkeypatch):
    from glocal_lib.experiments import reproduce

    seen = {}
    monkeypatch.setattr(reproduce, "run_notebooks", lambda names, params, root, **kw: seen.update(params) or {})
    monkeypatch.setattr(reproduce, "atomic_write_json", lambda *a, **k: None)
    def refuse(params, source):
        raise ConfigError(f"checked {sorted(params)}")

    monkeypatch.setattr(reproduce, "check_parameters", refuse)
    with pytest.raises(ConfigError):
        reproduce.reproduce_cli(["--only", "T5"])
    assert not seen


# ------------------------------------------------------------------ interrupted notebooks
def _fake_papermill(monkeypatch, behaviour):
    import nbformat
    import papermill as pm

    def execute_notebook(src, out, **kw):
        assert Path(out).name.endswith(".INCOMPLETE.ipynb")  # what a kill -9 leaves: never the finished name
        Path(out).write_text(nbformat.writes(nbformat.v4.new_notebook(metadata={"partial": True})))  # written as it goes
        behaviour()

    monkeypatch.setattr(pm, "execute_notebook", execute_notebook)


def test_interrupted_notebook_keeps_an_explicit_name(monkeypatch, tmp_path):
    from glocal_lib.experiments.reproduce import run_notebooks

    nb_dir = tmp_path / "out" / "notebooks"
    nb_dir.mkdir(parents=True)
    (nb_dir / "00_data.ipynb").write_text("{}")  # from an earlier, finished run

    def ctrl_c():
        raise KeyboardInterrupt

    _fake_papermill(monkeypatch, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_notebooks(["00_data"], {}, tmp_path / "out", echo=False)
    assert sorted(p.name for p in nb_dir.iterdir()) == ["00_data.INTERRUPTED.ipynb"]
    _fake_papermill(monkeypatch, lambda: None)
    run_notebooks(["00_data"], {}, tmp_path / "out", echo=False)
    assert sorted(p.name for p in nb_dir.iterdir()) == ["00_data.ipynb"]


def test_kill_during_reproduce_is_an_interrupt(monkeypatch, tmp_path):
    import signal

    from glocal_lib.experiments.reproduce import run_notebooks, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    _fake_papermill(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        run_notebooks(["00_data"], {}, tmp_path / "out", echo=False)
    assert [p.name for p in (tmp_path / "out" / "notebooks").iterdir()] == ["00_data.INTERRUPTED.ipynb"]
    assert signal.getsignal(signal.SIGTERM) == before  # restored afterwards


# ------------------------------------------------------------------ item 8: one wrapper, --debug
def test_cli_errors_are_one_message_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["data", "check", "mvtec", "--root", str(tmp_path / "nowhere")]
    assert main(args) == 1
    assert "dataset folder not found" in capsys.readouterr().err
    with pytest.raises(DataError):
        main([*args, "--debug"])
    with pytest.raises(DataError):
        main(["--debug", *args])
    monkeypatch.setenv("GLOCAL_DEBUG", "1")
    with pytest.raises(DataError):
        main(args)


def test_unexpected_errors_and_ctrl_c_give_no_traceback(monkeypatch, capsys):
    import glocal_lib.data.cli as data_cli_mod

    def boom(argv):
        raise RuntimeError("something deep")

    monkeypatch.setattr(data_cli_mod, "data_cli", boom)
    assert main(["data", "index"]) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: something deep" in err and "--debug" in err and "Traceback" not in err

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cli_mod, "data_cli", interrupted)
    assert main(["data", "index"]) == 130
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["-m", "glocal_lib.experiments.reproduce", "--only", "T42", "--list"],
    ["-m", "glocal_lib.cli", "eval", "--dataset", "mvtec", "--weights", "/nonexistent/w.pt", "--profile", "nope"],
])
def test_module_entry_points_end_in_a_short_message(argv):
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) < 15


# ------------------------------------------------------------------ undefined metrics are visible
def test_undefined_metrics_are_explained_where_the_numbers_are_read(tmp_path, capsys):
    from types import SimpleNamespace

    from glocal_lib.engine.cli import _print_undefined
    from glocal_lib.metrics import category_metrics
    from glocal_lib.metrics.inputs import UndefinedMetricWarning
    from glocal_lib.metrics.summary import explain_undefined

    rng = np.random.default_rng(0)
    labels = {"01": [0, 1, 0, 1], "zipper": [1, 1, 1], "screw": [0, 0]}
    data = {c: {"scores": rng.random(len(y)), "labels": np.array(y)} for c, y in labels.items()}
    with pytest.warns(UndefinedMetricWarning):
        table = category_metrics(data, "mvtec")  # the metrics layer's own verdict: NaN for one-label categories
    per_cat = {c: {m: (None if np.isnan(v) else v) for m, v in g.set_index("metric")["value"].items()}
               for c, g in table[table["category"] != "mean"].groupby("category")}
    lines = explain_undefined(per_cat, labels)
    assert len(lines) == 2
    # only the cflow AUPRO undefined where the pixel metrics are defined: its threshold guard, not the masks
    peaked = explain_undefined({"tubes": {"pixel_auroc": 0.4, "aupro_cflow": None, "aupro_mvtec": 0.1}},
                               {"tubes": [1, 1, 0]})
    assert len(peaked) == 1 and "too peaked" in peaked[0] and "defect pixels" not in peaked[0]
    assert any("only anomalous images in category 'zipper' (image_auroc, image_ap" in x for x in lines)
    assert any("only normal images in category 'screw'" in x for x in lines)
    # what `glocal eval` prints for a finished run (BTAD-like '01' stays a string)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"per_category": per_cat}))
    rows = [(f"{c}/{i}.png", c, y, 0.5) for c, ys in labels.items() for i, y in enumerate(ys)]
    pd.DataFrame(rows, columns=["image_path", "category", "label", "score"]).to_csv(run / "scores.csv", index=False)
    _print_undefined(SimpleNamespace(path=run, metrics_json=lambda: json.loads((run / "metrics.json").read_text())))
    out = capsys.readouterr().out
    assert "undefined: only anomalous images in category 'zipper'" in out and "'01'" not in out
