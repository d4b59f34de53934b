"""What keeps the smoke reproduction inside its budget, checked for staying correct:
shared frozen backbones and zero-shot prompt embeddings, the git commit asked once, a private
kernelspec and one kernel reset between notebooks, PNG-only figures, PCA for tiny projections."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from glocal_lib.config import load_preset
from glocal_lib.engine import load_profile
from glocal_lib.engine import runs as runs_mod
from glocal_lib.engine.modeling import build_detector
from glocal_lib.errors import ConfigError
from glocal_lib.experiments import figures, kernels
from glocal_lib.experiments.reproduce import timing_table
from glocal_lib.model import backbone as bb
from glocal_lib.model import text as text_mod

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_shared_backbones():
    bb.clear_shared_backbones()
    yield
    bb.clear_shared_backbones()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_shared_backbone_is_built_once_per_key_and_equals_a_fresh_build() -> None:
    a = bb.load_clip_shared("glocal-tiny-8", None, seed=3)
    assert bb.load_clip_shared("glocal-tiny-8", None, seed=3) is a
    b = bb.load_clip_shared("glocal-tiny-8", None, seed=4)
    assert b is not a
    fresh = bb.load_clip("glocal-tiny-8", None, seed=3)
    sa, sf = _state(a), _state(fresh)
    assert sa.keys() == sf.keys() and all(torch.equal(sa[k], sf[k]) for k in sa)


def test_a_tower_written_in_place_is_rebuilt_not_shared() -> None:
    a = bb.load_clip_shared("glocal-tiny-8", None, seed=3)
    with torch.no_grad():
        a.visual.proj.mul_(2.0)  # bumps the version counter
    b = bb.load_clip_shared("glocal-tiny-8", None, seed=3)
    assert b is not a
    assert torch.equal(b.visual.proj, bb.load_clip("glocal-tiny-8", None, seed=3).visual.proj)


def test_at_most_shared_max_towers_stay_alive() -> None:
    for seed in range(bb.SHARED_MAX + 2):
        bb.load_clip_shared("glocal-tiny-8", None, seed=seed)
    assert len(bb._SHARED) == bb.SHARED_MAX


def test_detectors_share_the_tower_and_predict_as_an_unshared_one() -> None:
    profile = load_profile("smoke")
    cfg = load_preset("glocalclip-released", "mvtec", normal_length=3, anomaly_length=2, deep_depth=3,
                      deep_length=2)
    m1 = build_detector(cfg, profile, seed=5)
    m2 = build_detector(cfg, profile, seed=6)
    assert m1.clip is m2.clip  # fixed backbone_seed: one tower for every prompt seed
    from glocal_lib.model import build_model

    ref = build_model(cfg, backbone=profile.backbone, device="cpu", image_size=profile.image_size, seed=6,
                      backbone_seed=profile.backbone_seed).eval()
    ref.vision.fused_attention = m2.vision.fused_attention  # same attention kernel as the profile's
    images = torch.randn(2, 3, profile.image_size, profile.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = m2.predict(images, sigma=1.0), ref.predict(images, sigma=1.0)
    assert torch.allclose(got.maps, want.maps, atol=0, rtol=0)
    assert torch.equal(got.image_scores, want.image_scores)


@pytest.mark.parametrize("preset", ["clip", "winclip"])
def test_zero_shot_prompts_are_encoded_once_per_shared_tower(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = load_profile("smoke")
    calls = {"n": 0}
    real = text_mod.encode_prompts

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    import glocal_lib.model.detector as det

    monkeypatch.setattr(det, "encode_prompts", counting)
    cfg = load_preset(preset)
    first = build_detector(cfg, profile, seed=111)._frozen_text_pairs(None)
    n_first = calls["n"]
    second = build_detector(cfg, profile, seed=112)._frozen_text_pairs(None)
    assert n_first >= 1 and calls["n"] == n_first  # the second run's detector encoded nothing
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # and the shared value is what an unshared detector computes
    from glocal_lib.model import build_model

    alone = build_model(cfg, backbone=profile.backbone, image_size=profile.image_size, seed=111,
                        backbone_seed=profile.backbone_seed)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first, alone.text_pairs(None)))


def test_trained_prompts_never_use_the_shared_text_cache() -> None:
    profile = load_profile("smoke")
    cfg = load_preset("coop")
    m1, m2 = build_detector(cfg, profile, seed=1), build_detector(cfg, profile, seed=2)
    t1, t2 = m1._frozen_text_pairs(None), m2._frozen_text_pairs(None)
    assert not torch.allclose(t1[0], t2[0])  # different initial prompts give different embeddings
    assert "_zero_shot_text_cache" not in m1.clip.__dict__


def test_git_commit_is_asked_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = subprocess.run

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(runs_mod, "_GIT_MEMO", {})
    monkeypatch.setattr(runs_mod.subprocess, "run", counting)
    first = runs_mod.git_commit()
    second = runs_mod.git_commit()
    assert first == second and len(calls) == 2  # rev-parse + status, once
    second["commit"] = "changed"
    assert runs_mod.git_commit() == first  # callers get copies


# ------------------------------------------------------------------------------------ kernels
def test_private_kernelspecs_do_not_collide_and_are_removed() -> None:
    with kernels.private_kernelspec(Path("/pkg")) as a, kernels.private_kernelspec(Path("/pkg")) as b:
        assert a != b
        spec = json.loads((a / "kernels" / kernels.KERNEL_NAME / "kernel.json").read_text())
        assert "/pkg" in spec["env"]["PYTHONPATH"] and spec["argv"][0]
    assert not a.exists() and not b.exists()


def _toy(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("tag = 'default'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_one_kernel_runs_several_notebooks_each_from_a_clean_namespace(tmp_path: Path) -> None:
    import papermill as pm

    first = _toy(tmp_path / "a.ipynb", "leftover = tag\nimport os\nprint(os.getpid())")
    second = _toy(tmp_path / "b.ipynb", "import os\nprint(os.getpid())\nprint('leftover' in globals(), tag)")
    outs = []
    with kernels.private_kernelspec(Path(__file__).resolve().parents[1]), \
            kernels.notebook_kernels(True, tmp_path) as kernel:
        for i, src in enumerate((first, second)):
            kernel.prepare()
            nb = pm.execute_notebook(str(src), str(tmp_path / f"out{i}.ipynb"), parameters={"tag": f"run{i}"},
                                     kernel_name=kernels.KERNEL_NAME, km=kernel.km, progress_bar=False)
            outs.append("".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])).split())
            assert [c["execution_count"] for c in nb.cells if c["cell_type"] == "code"][0] == 1
    assert outs[0][0] == outs[1][0]  # same kernel process
    assert outs[1][1:] == ["False", "run1"]  # nothing left over from the first notebook


def test_timing_table_lists_every_notebook_and_the_machine() -> None:
    text = timing_table({"00_data": 3.0, "01_train": 9.0}, 12.0, shared_kernel=True,
                        load=((1.0, 0.5, 0.2), (2.0, 1.0, 0.4)))
    assert "| 00_data | 3.0 | 25% |" in text and "| 01_train | 9.0 | 75% |" in text
    assert "**12.0**" in text and "CPUs" in text and "2.00 1.00 0.40 at the end" in text


# ------------------------------------------------------------------------------------ figures
def test_figure_formats_come_from_the_profile_and_pdf_is_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLOCAL_FIGURE_FORMATS", raising=False)
    assert load_profile("smoke").formats == ("png",)
    assert load_profile("paper").formats == ("png", "pdf")
    monkeypatch.setenv("GLOCAL_FIGURE_FORMATS", "png,pdf")
    assert load_profile("smoke").formats == ("png", "pdf")
    with pytest.raises(ConfigError, match="figure_formats"):
        load_profile("smoke", figure_formats="png,gif")


def test_save_figure_writes_only_the_asked_formats_and_drops_stale_ones(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from glocal_lib.experiments import provenance

    prov = provenance.build("F9", "t", profile=load_profile("smoke"), glocal_preset="glocalclip-released",
                            presets=[], run_ids=[])
    (tmp_path / "F9.pdf").write_bytes(b"%PDF old drawing")
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    paths = figures.save_figure(fig, tmp_path, "F9", prov, formats=("png",))
    assert [p.name for p in paths] == ["F9.png", "F9.provenance.json"]
    assert not (tmp_path / "F9.pdf").exists()
    fig, ax = plt.subplots()
    figures.save_figure(fig, tmp_path, "F9", prov, formats=("png", "pdf"))
    assert (tmp_path / "F9.pdf").read_bytes()[:4] == b"%PDF"


def test_tiny_projections_use_pca_equal_to_sklearns() -> None:
    pts = np.random.default_rng(0).normal(size=(12, 8))
    xy, how = figures.project_2d(pts, min_umap_points=64)
    assert how == "PCA"
    ref = PCA(n_components=2, svd_solver="full").fit_transform(pts)
    for j in range(2):  # principal axes are defined up to sign
        assert np.allclose(np.abs(xy[:, j]), np.abs(ref[:, j]), atol=1e-8)
        assert np.allclose(xy[:, j] * np.sign(xy[0, j]), ref[:, j] * np.sign(ref[0, j]), atol=1e-8)


def test_probe_fingerprint_is_computed_once_per_shared_tower_and_vision_settings() -> None:
    from glocal_lib.engine import features

    profile = load_profile("smoke")
    base = load_preset("glocalclip-released", "mvtec")
    a = build_detector(base, profile, seed=1)
    b = build_detector(base.replace(gcl_lambda=0.0), profile, seed=2)  # other prompts, same vision
    c = build_detector(base.replace(attention="qq"), profile, seed=3)  # other vision
    calls = {"n": 0}
    for m in (a, b, c):
        real = m.encode_image

        def counting(images, real=real):
            calls["n"] += 1
            return real(images)

        m.encode_image = counting
    fa = features.probe_fingerprint(a, "cpu")
    assert features.probe_fingerprint(b, "cpu") == fa and calls["n"] == 1
    fc = features.probe_fingerprint(c, "cpu")
    assert calls["n"] == 2 and fc != fa
    bb.clear_shared_backbones()
    alone = build_detector(base.replace(gcl_lambda=0.0), profile, seed=2)
    assert alone.clip is not a.clip and features.probe_fingerprint(alone, "cpu") == fa  # same value, recomputed
