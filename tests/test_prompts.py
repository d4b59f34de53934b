"""Prompt construction: token positions, EOS, shared normal prefix, abnormal-token position."""

from __future__ import annotations

import pytest
import torch
from helpers_model import small_cfg, tiny_clip
from open_clip.tokenizer import SimpleTokenizer
from open_clip.tokenizer import tokenize as oc_tokenize

from glocal_lib.errors import ConfigError
from glocal_lib.model.prompts import FixedPrompts, LearnedPrompts, build_prompt_learner

TOK = SimpleTokenizer()
SOS, EOS = TOK.sot_token_id, TOK.eot_token_id


@pytest.fixture(scope="module")
def clip():
    return tiny_clip()


def _learner(cfg, clip, seed=0):
    return build_prompt_learner(cfg, clip.ln_final.weight.shape[0], 77, torch.Generator().manual_seed(seed))


def _suffix_ids(text):
    return TOK.encode(text) + [EOS]


def test_glocal_token_ids_and_eos(clip):
    n, a = 3, 2
    learner = _learner(small_cfg(normal_length=n, anomaly_length=a), clip)
    ids = learner.token_ids()
    g, ll = TOK.encode("G")[0], TOK.encode("L")[0]
    assert learner.prompt_names == ("global_normal", "global_anomaly", "local_normal", "local_anomaly")
    expect = [
        [SOS] + [g] * n + _suffix_ids("object."),
        [SOS] + [g] * (n + a) + _suffix_ids("damaged object."),
        [SOS] + [ll] * n + _suffix_ids("object."),
        [SOS] + [ll] * (n + a) + _suffix_ids("damaged object."),
    ]
    for row, e in zip(ids, expect):
        assert row[: len(e)].tolist() == e
        assert int(row.argmax()) == len(e) - 1  # EOS = argmax of the ids
        assert (row[len(e):] == 0).all()


def test_glocal_embeddings_share_normal_prefix(clip):
    n, a = 3, 2
    learner = _learner(small_cfg(normal_length=n, anomaly_length=a), clip)
    emb, ids = learner(clip.token_embedding)
    tok = clip.token_embedding(ids)
    ctx = learner.ctx
    assert emb.shape == (4, 77, clip.ln_final.weight.shape[0])
    for i, branch in ((0, "global"), (2, "local")):
        normal, anomaly = emb[i], emb[i + 1]
        assert torch.equal(normal[0], tok[i, 0])  # SOS untouched
        assert torch.equal(normal[1 : 1 + n], ctx[f"{branch}_normal"])
        assert torch.equal(normal[1 + n :], tok[i, 1 + n :])  # "object ." EOS, padding
        assert torch.equal(anomaly[1 : 1 + n], ctx[f"{branch}_normal"])  # semantic: same normal vectors
        assert torch.equal(anomaly[1 + n : 1 + n + a], ctx[f"{branch}_anomaly"])
        assert torch.equal(anomaly[1 + n + a :], tok[i + 1, 1 + n + a :])
    assert not torch.equal(ctx["global_normal"], ctx["local_normal"])
    # gradient reaches the shared normal vectors from both prompts of its branch only
    emb[1].sum().backward()
    assert ctx["global_normal"].grad is not None and ctx["global_anomaly"].grad is not None
    assert ctx["global_normal"].grad.abs().sum() > 0
    assert ctx["local_normal"].grad is None or not ctx["local_normal"].grad.any()


def test_semantic_off_and_positions(clip):
    n, a = 4, 2
    off = _learner(small_cfg(normal_length=n, anomaly_length=a, semantic=False), clip)
    emb, ids = off(clip.token_embedding)
    assert torch.equal(emb[1, 1 : 1 + a], off.ctx["global_anomaly"])
    assert int(ids[1].argmax()) == 1 + a + len(TOK.encode("damaged object."))

    front = _learner(small_cfg(normal_length=n, anomaly_length=a, anomaly_position="front"), clip)
    emb, _ = front(clip.token_embedding)
    assert torch.equal(emb[1, 1 : 1 + a], front.ctx["global_anomaly"])
    assert torch.equal(emb[1, 1 + a : 1 + a + n], front.ctx["global_normal"])

    mid = _learner(small_cfg(normal_length=n, anomaly_length=a, anomaly_position="middle"), clip)
    emb, _ = mid(clip.token_embedding)
    h = n // 2
    assert torch.equal(emb[1, 1 : 1 + h], mid.ctx["global_normal"][:h])
    assert torch.equal(emb[1, 1 + h : 1 + h + a], mid.ctx["global_anomaly"])
    assert torch.equal(emb[1, 1 + h + a : 1 + n + a], mid.ctx["global_normal"][h:])


def test_single_prompt_and_anomalyclip(clip):
    single = _learner(small_cfg(glocal=False), clip)
    assert single.prompt_names == ("normal", "anomaly")
    assert set(single.ctx) == {"normal", "anomaly"}
    ac = _learner(small_cfg("anomalyclip"), clip)
    emb, ids = ac(clip.token_embedding)
    x = TOK.encode("X")[0]
    assert ids[0, 1:4].tolist() == [x] * 3 and ids[1, 1:4].tolist() == [x] * 3
    assert torch.equal(emb[0, 1:4], ac.ctx["normal"]) and torch.equal(emb[1, 1:4], ac.ctx["anomaly"])


def test_coop_shared_context_and_class_name(clip):
    learner = _learner(small_cfg("coop"), clip)
    assert set(learner.ctx) == {"normal"}
    emb, ids = learner(clip.token_embedding, "metal nut")
    assert ids[0, 4 : 4 + 4].tolist() == TOK.encode("metal nut.") + [EOS]
    assert ids[1, 4 : 4 + 5].tolist() == TOK.encode("damaged metal nut.") + [EOS]
    assert torch.equal(emb[0, 1:4], emb[1, 1:4])  # one context shared by both prompts


def test_fixed_clip_prompts_match_open_clip_tokenizer(clip):
    learner = build_prompt_learner(small_cfg("clip"), 128)
    assert isinstance(learner, FixedPrompts)
    ids = learner.token_ids("bottle")
    ref = oc_tokenize(["A photo of a normal bottle.", "A photo of a damaged bottle."])
    assert torch.equal(ids, ref)
    emb, _ = learner(clip.token_embedding, "bottle")
    assert torch.equal(emb, clip.token_embedding(ref))
    assert list(learner.parameters()) == []


def test_init_is_seeded_normal_002(clip):
    cfg = small_cfg(normal_length=30, anomaly_length=30)
    a, b = _learner(cfg, clip, seed=1), _learner(cfg, clip, seed=1)
    c = _learner(cfg, clip, seed=2)
    assert torch.equal(a.ctx["global_normal"], b.ctx["global_normal"])
    assert not torch.equal(a.ctx["global_normal"], c.ctx["global_normal"])
    allv = torch.cat([p.flatten() for p in a.parameters()])
    allv = allv.detach()
    assert abs(float(allv.std()) - 0.02) < 0.002 and abs(float(allv.mean())) < 0.002


def test_too_long_prompt_is_a_config_error(clip):
    with pytest.raises(ConfigError, match="tokens"):
        LearnedPrompts(small_cfg(normal_length=40, anomaly_length=40), 128, context_length=77)


def test_reserved_deep_positions_keep_the_context(clip):
    """deep_overwrites_context=False: t extra placeholders after SOS; context starts at 1 + t."""
    n, a, t = 3, 2, 2
    learner = _learner(small_cfg(normal_length=n, anomaly_length=a, deep_length=t,
                                 deep_overwrites_context=False), clip)
    emb, ids = learner(clip.token_embedding)
    g = TOK.encode("G")[0]
    assert ids[1, 1 : 1 + t + n + a].tolist() == [g] * (t + n + a)
    tok = clip.token_embedding(ids)
    assert torch.equal(emb[1, 1 : 1 + t], tok[1, 1 : 1 + t])  # reserved slots: placeholder embeddings
    assert torch.equal(emb[1, 1 + t : 1 + t + n], learner.ctx["global_normal"])
    assert torch.equal(emb[1, 1 + t + n : 1 + t + n + a], learner.ctx["global_anomaly"])
    released = _learner(small_cfg(normal_length=n, anomaly_length=a, deep_length=t), clip)
    assert int(released.token_ids()[1].argmax()) + t == int(ids[1].argmax())
