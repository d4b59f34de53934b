"""ModelConfig and the method presets (values transcribed from train.sh / the paper text)."""

from __future__ import annotations

import json

import pytest

from glocal_lib.config import (
    ModelConfig,
    load_preset,
    load_preset_for,
    preset_info,
    preset_names,
    variant_for,
)
from glocal_lib.errors import ConfigError


def test_defaults_are_released_behaviour():
    c = ModelConfig()
    assert (c.method, c.glocal, c.semantic, c.anomaly_position) == ("glocalclip", True, True, "back")
    assert c.alias_final_layer and not c.global_ln_post and c.deep_fp16_rounding
    assert (c.map_reduction, c.gcl_margin, c.gcl_anchor, c.precision) == ("sum", 0.0, "global", "fp32")


@pytest.mark.parametrize("variant,n,a,depth,t", [
    ("visa", 13, 13, 9, 4), ("mvtec", 12, 13, 10, 2), ("colondb", 12, 12, 12, 4), ("clinicdb", 12, 12, 9, 4),
])
def test_released_variants(variant, n, a, depth, t):
    c = load_preset("glocalclip-released", variant)
    assert (c.normal_length, c.anomaly_length, c.deep_depth, c.deep_length) == (n, a, depth, t)
    assert c.sigma == 8.0 and c.gcl_lambda == 1.0
    assert variant_for("glocalclip-released", train_dataset=variant) == variant


def test_paper_preset_and_eval_variants():
    c = load_preset("glocalclip-paper")
    assert (c.normal_length, c.anomaly_length, c.deep_depth, c.deep_length) == (13, 10, 12, 4)
    assert not c.alias_final_layer and c.map_reduction == "mean" and c.sigma == 8.0
    assert load_preset("glocalclip-paper", "mvtec").anomaly_length == 13
    assert load_preset("glocalclip-paper", "visa").gcl_lambda == 0.0
    assert load_preset("glocalclip-paper", "tn3k").gcl_lambda == 0.1
    assert load_preset("glocalclip-paper", "kvasir").deep_length == 2
    assert variant_for("glocalclip-paper", "clinicdb", "br35h") == "br35h"
    assert variant_for("glocalclip-paper", "clinicdb", "isic") is None


def test_baseline_presets():
    assert set(preset_names()) >= {"glocalclip-released", "glocalclip-paper", "anomalyclip", "coop", "clip"}
    ac = load_preset("anomalyclip")  # the released train.sh/test.sh: top layer only, local x4
    assert ac.num_prompts == 2 and ac.local_loss_weight == 4.0 and ac.feature_layers == (-1,)
    assert (ac.normal_length, ac.deep_depth, ac.deep_length, ac.sigma) == (12, 9, 4, 4.0)
    tp = load_preset("anomalyclip-trainpy-defaults")  # train.py argparse defaults: true 6/12/18/24, x4
    assert tp.feature_layers is None and not tp.alias_final_layer and tp.local_loss_weight == 4.0
    assert tp.replace(feature_layers=[-1]) == ac
    for name in ("anomalyclip", "anomalyclip-trainpy-defaults"):
        assert "zqhang/AnomalyCLIP" in preset_info(name)["source"]
    assert load_preset("clip").method == "clip" and not load_preset("coop").has_deep_prompts
    assert preset_info("glocalclip-released")["lambda_grid"]["mvtec"] == [1.0, 0.0, 0.1, 0.01]


def test_round_trip_and_errors():
    c = load_preset("glocalclip-released", "mvtec", gcl_lambda=0.1, feature_layers=[6, 12])
    d = json.loads(json.dumps(c.to_dict()))
    assert ModelConfig.from_dict(d) == c and c.feature_layers == (6, 12)
    with pytest.raises(ConfigError, match="unknown ModelConfig option"):
        load_preset("glocalclip-released", gcl_lamda=0.1)
    with pytest.raises(ConfigError, match="variants"):
        load_preset("glocalclip-released", "kvasir")
    with pytest.raises(ConfigError, match="known presets"):
        load_preset("nope")
    with pytest.raises(ConfigError, match="attention"):
        ModelConfig(attention="xx")


def test_load_preset_for_picks_the_variant():
    assert load_preset_for("glocalclip-released", "mvtec", "visa").deep_depth == 10
    assert load_preset_for("glocalclip-paper", "mvtec", "visa").gcl_lambda == 0.0
    assert load_preset_for("glocalclip-paper", "clinicdb", "isic") == load_preset("glocalclip-paper")
    assert load_preset_for("anomalyclip", "mvtec", "visa", sigma=8.0).sigma == 8.0
