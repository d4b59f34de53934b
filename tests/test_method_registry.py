"""The method registry: a new method's config class and detector plug in without touching the engine.

A toy method registered here must come back from presets, run records and checkpoints as its own
class, and build_model must build its own detector; the existing methods keep ModelConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from helpers_model import BACKBONE, IMAGE_SIZE
from torch import nn

from glocal_lib.config import (
    METHOD_CONFIGS,
    MethodConfig,
    ModelConfig,
    config_from_dict,
    load_preset,
    register_config,
)
from glocal_lib.errors import ConfigError
from glocal_lib.model import build_model, save_checkpoint


class ToyDetector(nn.Module):
    """The smallest detector the checkpoint code can save: trained tensors in ``prompts``."""

    def __init__(self, clip: nn.Module, cfg: ToyConfig, *, backbone: str | None = None, weights: str | None = None,
                 image_size: int | None = None, seed: int = 0, backbone_seed: int = 0) -> None:
        super().__init__()
        self.cfg, self.clip = cfg, clip
        self.backbone_name, self.weights, self.image_size = backbone, weights, image_size
        self.seed, self.backbone_seed = seed, backbone_seed
        gen = torch.Generator().manual_seed(seed)
        self.prompts = nn.ParameterDict({"ctx": nn.Parameter(torch.randn(cfg.width, generator=gen))})
        self.deep = None
        self.prompt_names = ("normal", "anomaly")


@register_config("toy-test")
@dataclass(frozen=True)
class ToyConfig(MethodConfig):
    detector: ClassVar[str] = f"{__name__}:ToyDetector"
    method: str = "toy-test"
    precision: str = "fp32"
    sigma: float = 4.0
    width: int = 3
    layers: tuple[int, ...] = (1, 2)


def test_config_round_trips_as_its_own_class():
    cfg = config_from_dict({"method": "toy-test", "width": 5, "layers": [3], "sigma": 2})
    assert type(cfg) is ToyConfig and cfg.layers == (3,) and isinstance(cfg.sigma, float)
    assert cfg.to_dict()["layers"] == [3]
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(width=7) == ToyConfig(width=7, layers=(3,), sigma=2.0)
    assert type(config_from_dict({"normal_length": 3})) is ModelConfig  # no method: glocalclip
    assert all(METHOD_CONFIGS[m] is ModelConfig for m in ("glocalclip", "anomalyclip", "coop", "clip", "winclip"))


def test_bad_configs_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown method 'nope'.*toy-test"):
        config_from_dict({"method": "nope"})
    with pytest.raises(ConfigError, match=r"unknown ToyConfig option\(s\) \['normal_length'\]"):
        config_from_dict({"method": "toy-test", "normal_length": 3})
    with pytest.raises(ConfigError, match="width must be an integer"):
        config_from_dict({"method": "toy-test", "width": "wide"})
    with pytest.raises(ConfigError, match="precision"):
        ToyConfig(precision="fp8")
    with pytest.raises(ValueError, match="already registered"):
        register_config("toy-test")(type("Other", (ToyConfig,), {}))


def test_preset_of_a_registered_method(tmp_path):
    presets = tmp_path / "methods.yaml"
    presets.write_text("presets:\n  toy:\n    config: {method: toy-test, width: 4}\n"
                       "    variants: {wide: {width: 9}}\n")
    assert load_preset("toy", path=presets) == ToyConfig(width=4)
    assert load_preset("toy", "wide", path=presets, sigma=1.0) == ToyConfig(width=9, sigma=1.0)


def test_build_model_and_checkpoint_use_the_methods_detector(tmp_path):
    model = build_model(ToyConfig(width=6), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=3)
    assert type(model) is ToyDetector and model.prompts["ctx"].shape == (6,)
    with torch.no_grad():
        model.prompts["ctx"].add_(1.0)  # "trained"
    path = save_checkpoint(model, tmp_path / "toy.pt")
    again = build_model(checkpoint=path)
    assert type(again) is ToyDetector and again.cfg == ToyConfig(width=6)
    assert torch.equal(again.prompts["ctx"], model.prompts["ctx"])
    fresh = build_model(ToyConfig(width=6), backbone=BACKBONE, image_size=IMAGE_SIZE, seed=3)
    assert not torch.equal(fresh.prompts["ctx"], model.prompts["ctx"])
