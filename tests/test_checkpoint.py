"""Checkpoints: our format rebuilds a model alone; official GlocalCLIP / AnomalyCLIP files both ways."""

from __future__ import annotations

import pytest
import torch
from helpers_model import BACKBONE, IMAGE_SIZE, small_cfg, tiny_model

from glocal_lib.errors import ConfigError, WeightsError
from glocal_lib.model import (
    build_model,
    export_official,
    import_official,
    official_state_dict,
    save_checkpoint,
)
from glocal_lib.model.prompts import tokenize

W = 128  # text width of the tiny backbone
L = 77


def expected_glocal_keys(n, a, depth, t):
    """Keys and shapes of the released GlocalCLIP_PromptLearner's state dict (read from its code)."""
    keys = {
        "ctx_global_pos": (1, 1, n, W), "ctx_global_neg": (1, 1, a, W),
        "ctx_local_pos": (1, 1, n, W), "ctx_local_neg": (1, 1, a, W),
    }
    for b in ("global", "local"):
        keys[f"token_prefix_{b}_pos"] = (1, 1, 1, W)
        keys[f"token_suffix_{b}_pos"] = (1, 1, L - 1 - n, W)
        keys[f"token_prefix_{b}_neg"] = (1, 1, 1, W)
        keys[f"token_suffix_{b}_neg"] = (1, 1, L - 1 - n - a, W)
        keys[f"tokenized_prompts_{b}_pos"] = (1, 1, L)
        keys[f"tokenized_prompts_{b}_neg"] = (1, 1, L)
    for j in range(depth - 1):
        keys[f"compound_prompts_text.{j}"] = (t, W)
        keys[f"compound_prompt_projections.{j}.weight"] = (896, W)
        keys[f"compound_prompt_projections.{j}.bias"] = (896,)
    return keys


@pytest.fixture(scope="module")
def model():
    return tiny_model(small_cfg(), seed=3)


def test_export_has_released_keys_shapes_and_buffers(model):
    sd = official_state_dict(model)
    want = expected_glocal_keys(3, 2, 4, 2)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    assert sd["tokenized_prompts_global_neg"].dtype == torch.int32
    ids = tokenize("G G G G G damaged object.")
    assert torch.equal(sd["tokenized_prompts_global_neg"].flatten().long(), ids)
    emb = model.clip.token_embedding(ids)
    assert torch.equal(sd["token_prefix_global_neg"].flatten(), emb[0])
    assert torch.equal(sd["token_suffix_global_neg"][0, 0], emb[6:])
    assert torch.equal(sd["ctx_local_neg"][0, 0], model.prompts.ctx["local_anomaly"])


def test_official_round_trip_identical_embeddings(model, tmp_path):
    path = export_official(model, tmp_path / "epoch_15.pth")
    other = tiny_model(small_cfg(), seed=4)  # different initial prompts ...
    other.clip.load_state_dict(model.clip.state_dict())  # ... on the same backbone
    assert not torch.equal(other.text_embeddings(), model.text_embeddings())
    import_official(other, path)
    assert torch.equal(other.text_embeddings(), model.text_embeddings())
    for p, q in zip(other.deep.unused_projections.parameters(), model.deep.unused_projections.parameters()):
        assert torch.equal(p, q)
    # re-export is bit-identical
    a, b = official_state_dict(model), official_state_dict(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_official_dict_with_extra_layers_and_without_buffers_imports(model, tmp_path):
    sd = official_state_dict(model)
    minimal = {k: v for k, v in sd.items() if not k.startswith(("token_", "tokenized_"))}
    torch.save({"prompt_learner": minimal}, tmp_path / "min.pth")
    m2 = tiny_model(small_cfg(), seed=5)
    m2.clip.load_state_dict(model.clip.state_dict())
    import_official(m2, tmp_path / "min.pth")
    assert torch.equal(m2.text_embeddings(), model.text_embeddings())


def test_anomalyclip_official_round_trip(tmp_path):
    cfg = small_cfg("anomalyclip")
    m = tiny_model(cfg, seed=1)
    sd = official_state_dict(m)
    assert tuple(sd["ctx_pos"].shape) == (1, 1, 3, W) and tuple(sd["ctx_neg"].shape) == (1, 1, 3, W)
    assert {"token_prefix_pos", "token_suffix_neg", "tokenized_prompts_pos", "compound_prompts_text.2",
            "compound_prompt_projections.2.bias"} <= set(sd)
    path = export_official(m, tmp_path / "ac.pth")
    rebuilt = build_model(None, backbone=BACKBONE, checkpoint=path, image_size=IMAGE_SIZE, backbone_seed=1)
    assert rebuilt.cfg.method == "anomalyclip" and rebuilt.cfg.normal_length == 3
    assert rebuilt.cfg.deep_depth == 4 and rebuilt.cfg.deep_length == 2
    assert torch.equal(rebuilt.text_embeddings(), m.text_embeddings())


def test_wrong_shapes_and_keys_name_the_file(model, tmp_path):
    sd = official_state_dict(model)
    bad = dict(sd, ctx_global_pos=torch.zeros(1, 1, 5, W))
    torch.save({"prompt_learner": bad}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad\.pth.*normal_length=5"):
        import_official(model, tmp_path / "bad.pth")
    missing = {k: v for k, v in sd.items() if k != "compound_prompts_text.1"}
    torch.save({"prompt_learner": missing}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="missing.pth"):
        import_official(model, tmp_path / "missing.pth")
    torch.save({"something": 1}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="other.pth"):
        import_official(model, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="nope.pth"):
        import_official(model, tmp_path / "nope.pth")


def test_weights_only_refuses_pickled_objects(model, tmp_path):
    torch.save({"prompt_learner": {"x": torch.zeros(1)}, "obj": ConfigError("pickled")}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="pickled Python objects") as err:
        import_official(model, tmp_path / "evil.pth")
    assert "weights_only=False" not in str(err.value) and "evil.pth" in str(err.value)  # never torch's advice


def test_our_checkpoint_rebuilds_the_model_alone(model, tmp_path):
    with torch.no_grad():
        model.prompts.ctx["global_normal"].add_(1.0)  # "trained"
    path = save_checkpoint(model, tmp_path / "ckpt.pt", extra={"epoch": 3})
    rebuilt = build_model(checkpoint=path)
    assert rebuilt.cfg == model.cfg and rebuilt.backbone_name == BACKBONE
    assert rebuilt.image_size == model.image_size and rebuilt.seed == model.seed
    assert rebuilt.backbone_seed == model.backbone_seed == 3
    for (k, v), (k2, v2) in zip(model.clip.state_dict().items(), rebuilt.clip.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(rebuilt.text_embeddings(), model.text_embeddings())
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(rebuilt.predict(images).maps, model.predict(images).maps)
    with pytest.raises(ConfigError, match="different config"):
        build_model(small_cfg(normal_length=4), checkpoint=path)
    bf16 = build_model(model.cfg.replace(precision="bf16", sigma=2.0), checkpoint=path)
    assert bf16.cfg.precision == "bf16" and torch.equal(bf16.prompts.ctx["global_normal"],
                                                         model.prompts.ctx["global_normal"])
    with pytest.raises(ConfigError, match="official"):
        export_official(tiny_model(small_cfg(anomaly_position="front")), tmp_path / "x.pth")


def test_prompt_seed_and_backbone_seed_are_separate():
    a = build_model(small_cfg(), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=1, backbone_seed=0)
    b = build_model(small_cfg(), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=2, backbone_seed=0)
    c = build_model(small_cfg(), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=1, backbone_seed=5)
    d = build_model(small_cfg(), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=5)  # default: backbone_seed = seed
    assert all(torch.equal(v, c.clip.state_dict()[k]) for k, v in d.clip.state_dict().items())
    sa, sb, sc = a.clip.state_dict(), b.clip.state_dict(), c.clip.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not torch.equal(a.prompts.ctx["global_normal"], b.prompts.ctx["global_normal"])
    assert torch.equal(a.prompts.ctx["global_normal"], c.prompts.ctx["global_normal"])
