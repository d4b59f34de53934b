"""Backbone loading: weight formats, checksums, error messages, tiny architectures, positional resize."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from helpers_model import bilinear_resize_np
from safetensors.torch import save_file

from glocal_lib.errors import ConfigError, WeightsError
from glocal_lib.model.backbone import (
    OPENAI_VIT_L_14_336,
    TINY_BACKBONES,
    WEIGHTS_DIR_ENV,
    default_feature_layers,
    default_vv_start_layer,
    feature_layers_for,
    load_clip,
    openai_state_dict,
    resize_positional_embedding,
    save_openai_state_dict,
    vv_start_layer_for,
)
from glocal_lib.model.vision import DualPathVisionEncoder


@pytest.fixture(scope="module")
def tiny8():
    return load_clip("glocal-tiny-8", seed=7)


def _features(model, image_size=56):
    enc = DualPathVisionEncoder(
        model.visual, vv_start_layer=2, feature_layers=(2, 4, 6, 8), image_size=image_size
    )
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 49408, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (*enc(x), model.encode_text(tokens))


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_tiny_architectures_registered():
    for name, depth in zip(TINY_BACKBONES, (24, 8)):
        assert name in open_clip.list_models()
        cfg = open_clip.get_model_config(name)
        assert cfg["quick_gelu"] and cfg["vision_cfg"]["layers"] == depth and cfg["text_cfg"]["layers"] == 12
    assert default_feature_layers(24) == (6, 12, 18, 24) and default_vv_start_layer(24) == 6
    assert default_feature_layers(8) == (2, 4, 6, 8) and default_vv_start_layer(8) == 2
    # what every detector and the cost model read from a config: None = the published layers, scaled
    assert feature_layers_for(None, 8) == (2, 4, 6, 8) and feature_layers_for((-1,), 24) == (24,)
    assert feature_layers_for((3, -2), 8) == (3, 7)
    assert vv_start_layer_for(None, 24) == 6 and vv_start_layer_for(3, 24) == 3


def test_random_init_is_seeded_frozen_fp32_with_random_biases(tiny8):
    again = load_clip("glocal-tiny-8", seed=7)
    _assert_same_weights(tiny8, again)
    other = load_clip("glocal-tiny-8", seed=8)
    assert not torch.equal(tiny8.visual.proj, other.visual.proj)
    assert not tiny8.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in tiny8.parameters())
    block = tiny8.visual.transformer.resblocks[0]
    assert block.attn.out_proj.bias.abs().min() > 0 and (block.ln_1.weight != 1).all()
    assert isinstance(block.mlp.gelu, open_clip.transformer.QuickGELU)


def test_openai_state_dict_round_trip(tiny8, tmp_path):
    path = save_openai_state_dict(tiny8, tmp_path / "tiny8_openai.pt")
    raw = torch.load(path, weights_only=True)
    assert int(raw["input_resolution"]) == 224 and int(raw["vocab_size"]) == 49408
    assert "visual.transformer.resblocks.7.attn.in_proj_weight" in raw and "token_embedding.weight" in raw
    inferred = load_clip(None, path)  # architecture read off the tensors, as OpenAI's build_model does
    assert inferred.visual.transformer.resblocks[0].attn.num_heads == 2
    assert isinstance(inferred.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    _assert_same_weights(tiny8, inferred)
    named = load_clip("glocal-tiny-8", path)
    for a, b, c in zip(_features(tiny8), _features(inferred), _features(named)):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_tiny24_openai_state_dict_with_published_layers(tmp_path):
    model = load_clip("glocal-tiny-24", seed=1)
    sd = openai_state_dict(model)
    del sd["logit_scale"]
    torch.save(sd, tmp_path / "tiny24.pth")
    loaded = load_clip(None, tmp_path / "tiny24.pth")
    assert len(loaded.visual.transformer.resblocks) == 24
    enc = DualPathVisionEncoder(loaded.visual, image_size=42)  # defaults: V-V from 6, layers 6/12/18/24
    ref = DualPathVisionEncoder(model.visual, image_size=42)
    x = torch.randn(1, 3, 42, 42, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for a, b in zip(enc(x), ref(x)):
            assert torch.equal(a, b)


def test_weights_found_through_env_and_parameter(tiny8, tmp_path, monkeypatch):
    save_openai_state_dict(tiny8, tmp_path / "w.pt")
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path))
    _assert_same_weights(tiny8, load_clip("glocal-tiny-8", "w.pt"))
    monkeypatch.delenv(WEIGHTS_DIR_ENV)
    _assert_same_weights(tiny8, load_clip("glocal-tiny-8", "w.pt", weights_dir=tmp_path))
    with pytest.raises(WeightsError, match="w.pt"):
        load_clip("glocal-tiny-8", "w.pt")


def test_open_clip_safetensors_and_bin(tiny8, tmp_path):
    sd = {k: v.contiguous() for k, v in tiny8.state_dict().items()}
    save_file(sd, str(tmp_path / "tiny8.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "tiny8.bin")
    _assert_same_weights(tiny8, load_clip("glocal-tiny-8", tmp_path / "tiny8.safetensors"))
    _assert_same_weights(tiny8, load_clip("glocal-tiny-8", tmp_path / "tiny8.bin"))
    with pytest.raises(WeightsError, match="does not fit backbone 'glocal-tiny-24'"):
        load_clip("glocal-tiny-24", tmp_path / "tiny8.safetensors")


def test_torchscript_archive(tiny8, tmp_path):
    with pytest.warns(FutureWarning):
        scripted = torch.jit.script(tiny8)
    scripted.save(str(tmp_path / "tiny8_jit.pt"))
    _assert_same_weights(tiny8, load_clip(None, tmp_path / "tiny8_jit.pt"))


def test_openai_weights_with_gelu_config_rejected(tiny8, tmp_path):
    cfg = open_clip.get_model_config("glocal-tiny-8")
    cfg = dict(cfg, quick_gelu=False)
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "glocal-test-tiny-8-gelu.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfgs")
    save_openai_state_dict(tiny8, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="QuickGELU"):
        load_clip("glocal-test-tiny-8-gelu", tmp_path / "w.pt")


def test_missing_file_names_file_url_and_checksum(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_clip("ViT-L-14-336-quickgelu", OPENAI_VIT_L_14_336.filename, weights_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / OPENAI_VIT_L_14_336.filename) in msg
    assert OPENAI_VIT_L_14_336.url in msg and OPENAI_VIT_L_14_336.sha256 in msg
    assert OPENAI_VIT_L_14_336.url.startswith("https://openaipublic.azureedge.net/clip/models/3035c92b")
    with pytest.raises(WeightsError, match="ViT-L-14-336px.pt"):
        load_clip("ViT-L-14-336-quickgelu", "openai", weights_dir=tmp_path)


def test_wrong_checksum_rejected(tmp_path):
    bad = tmp_path / OPENAI_VIT_L_14_336.filename
    bad.write_bytes(b"not the real archive")
    with pytest.raises(WeightsError) as err:
        load_clip("ViT-L-14-336-quickgelu", bad)
    msg = str(err.value)
    assert str(bad) in msg and OPENAI_VIT_L_14_336.sha256 in msg and OPENAI_VIT_L_14_336.url in msg


@pytest.mark.parametrize("content", [b"garbage bytes", None])
def test_garbage_or_non_clip_file_rejected(tmp_path, content):
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=str(path)):
        load_clip(None, path)


def test_unknown_backbone_and_nothing_to_load():
    with pytest.raises(ConfigError, match="ViT-X-99"):
        load_clip("ViT-X-99")
    with pytest.raises(ConfigError):
        load_clip(None, None)


def _bilinear_pos_reference(pos: np.ndarray, grid: int) -> np.ndarray:
    """The class token, then the patch table (old x old, D) resized by the numpy bilinear formula."""
    old = int(round((pos.shape[0] - 1) ** 0.5))
    table = pos[1:].reshape(old, old, -1).transpose(2, 0, 1)  # (D, old, old)
    return np.concatenate([pos[:1], bilinear_resize_np(table, grid).reshape(pos.shape[1], -1).T])


def test_positional_embedding_resize_is_bilinear_not_bicubic():
    pos = torch.randn(1 + 24 * 24, 6, generator=torch.Generator().manual_seed(0))
    new = resize_positional_embedding(pos, 37)
    assert new.shape == (1 + 37 * 37, 6)
    assert torch.equal(new[0], pos[0])
    np.testing.assert_allclose(
        new.double().numpy(), _bilinear_pos_reference(pos.double().numpy(), 37), atol=1e-5
    )
    grid = pos[1:].reshape(1, 24, 24, 6).permute(0, 3, 1, 2)
    bicubic = F.interpolate(grid, size=(37, 37), mode="bicubic", align_corners=False, antialias=True)
    assert (new[1:] - bicubic.reshape(6, -1).T).abs().max() > 1e-2
    assert torch.equal(resize_positional_embedding(pos, 24), pos)
    small = resize_positional_embedding(pos, 4)  # downsampling: still no antialias
    np.testing.assert_allclose(
        small.double().numpy(), _bilinear_pos_reference(pos.double().numpy(), 4), atol=1e-5
    )


def test_openai_state_dict_keys_are_plain_tensors(tiny8):
    sd = openai_state_dict(tiny8)
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    assert sd["visual.proj"].dtype == torch.float32
