"""KAnoCLIP's knowledge file: validation with clear errors, coverage, truncation, caching, the stand-in."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from glocal_lib.model.backbone import load_clip
from glocal_lib.model.kanoclip import KAnoCLIPConfig, KAnoCLIPDetector
from glocal_lib.model.kanoclip.knowledge import (
    FORMAT,
    KnowledgeError,
    check_coverage,
    knowledge_embeddings,
    read_knowledge,
    standin_document,
    template_knowledge,
    tokenize_truncated,
    write_standin,
)

ROWS = [("bottle/test/good/000.png", "bottle", 0), ("bottle/test/broken/001.png", "bottle", 1),
        ("metal_nut/test/bent/002.png", "metal_nut", 1)]


def _doc(**changes):
    doc = standin_document("mvtec", ROWS)
    doc.update(changes)
    return doc


def _write(tmp_path, doc, name="k.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def clip():
    return load_clip("glocal-tiny-8", seed=0)


def test_standin_is_deterministic_valid_and_complete(tmp_path):
    a = write_standin(tmp_path / "a.json", "mvtec", ROWS)
    b = write_standin(tmp_path / "b.json", "mvtec", list(reversed(ROWS)))
    assert a.read_bytes() == b.read_bytes()
    kn = read_knowledge(a)
    assert set(kn.classes) == {"mvtec/bottle", "mvtec/metal_nut"}
    assert all(len(v) == 5 for v in kn.classes.values())
    assert set(kn.images) == {f"mvtec/{p}" for p, _, _ in ROWS}
    assert "metal nut" in kn.classes["mvtec/metal_nut"][0]  # '_' as a space, as the paper's {class}
    stats = check_coverage(kn, "mvtec", [c for _, c, _ in ROWS], [p for p, _, _ in ROWS])
    assert stats == {"missing_classes": 0, "unmatched_images": 0, "images_with_vqa": 3, "images": 3}


@pytest.mark.parametrize(("doc", "match"), [
    (_doc(format="kanoclip/v0"), "'format' is 'kanoclip/v0', expected 'kanoclip-knowledge/v1'"),
    (_doc(classes={}), "'classes' must map"),
    (_doc(classes={"bottle": {"descriptions": ["x"]}}), "is not '<dataset key>/<name>'"),
    (_doc(classes={"mvtec/bottle": {"descriptions": []}}), "must be a non-empty list"),
    (_doc(classes={"mvtec/bottle": {"descriptions": ["fine", "  "]}}), r"descriptions\[1\] is an empty description"),
    (_doc(classes={"mvtec/bottle": ["a list, not an object"]}), "must be an object with a 'descriptions' list"),
    (_doc(images={"mvtec/a.png": "one string"}), r"images\['mvtec/a.png'\] must be a non-empty list"),
    (_doc(images={"mvtec/a.png": [3]}), "is int, not a string"),
    ([1, 2], "expected a JSON object"),
])
def test_corrupt_files_give_clear_errors(tmp_path, doc, match):
    p = _write(tmp_path, doc)
    with pytest.raises(KnowledgeError, match=match) as err:
        read_knowledge(p)
    assert str(p) in str(err.value)


def test_wrong_encoding_bad_json_and_missing_file(tmp_path):
    p = tmp_path / "latin.json"
    p.write_bytes(json.dumps(_doc()).replace("An abnormal", "Un abnórmal").encode("utf-8")
                  .replace("ó".encode(), "ó".encode("latin-1")))
    with pytest.raises(KnowledgeError, match="is not UTF-8 .* re-save it as UTF-8"):
        read_knowledge(p)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "kanoclip-knowledge/v1", "classes": {', encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"not valid JSON \(line 1"):
        read_knowledge(bad)
    with pytest.raises(KnowledgeError, match="does not exist.*kanoclip-noknowledge"):
        read_knowledge(tmp_path / "nope.json")
    bom = tmp_path / "bom.json"  # a UTF-8 byte-order mark (Windows editors) is fine
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(_doc()).encode())
    assert read_knowledge(bom).classes


def test_missing_category_names_it_and_skip_warns(tmp_path, caplog):
    doc = _doc()
    del doc["classes"]["mvtec/metal_nut"]
    kn = read_knowledge(_write(tmp_path, doc))
    cats, paths = [c for _, c, _ in ROWS], [p for p, _, _ in ROWS]
    with pytest.raises(KnowledgeError, match=r"no class descriptions for \['mvtec/metal_nut'\].*knowledge_missing"):
        check_coverage(kn, "mvtec", cats, paths)
    with caplog.at_level(logging.WARNING):
        stats = check_coverage(kn, "mvtec", cats, paths, missing="skip")
    assert stats["missing_classes"] == 1 and "L_KD = 0" in caplog.text


def test_unmatched_image_keys_are_counted_and_warned(tmp_path, caplog):
    doc = _doc()
    doc["images"]["mvtec/bottle/test/renamed.png"] = ["A stray description."]
    doc["images"]["visa/candle/x.png"] = ["Another dataset: not counted for mvtec."]
    kn = read_knowledge(_write(tmp_path, doc))
    with caplog.at_level(logging.WARNING):
        stats = check_coverage(kn, "mvtec", [c for _, c, _ in ROWS], [p for p, _, _ in ROWS])
    assert stats["unmatched_images"] == 1 and "renamed.png" in caplog.text


def test_truncation_keeps_eos_at_position_76():
    ids, cut = tokenize_truncated(" ".join(["defect"] * 200))
    assert cut and ids.shape == (77,) and int(ids.argmax()) == 76 and int(ids[76]) == 49407
    short, cut = tokenize_truncated("a small hole")
    assert not cut and int(short.argmax()) < 10


def test_embeddings_identical_across_loads_and_cached(tmp_path, clip):
    p = write_standin(tmp_path / "k.json", "mvtec", ROWS)
    a, b = read_knowledge(p), read_knowledge(p)
    assert a.sha256 == b.sha256
    ea = knowledge_embeddings(a, clip, {"tower": 1})
    eb = knowledge_embeddings(b, clip, {"tower": 1})
    assert ea is eb  # one encoding per (file hash, tower)
    fresh = type(ea)(b, clip)
    for k, (s, n) in ea.class_sum.items():
        assert torch.equal(s, fresh.class_sum[k][0]) and n == fresh.class_sum[k][1] == 5


def test_class_scope_pools_every_vqa_sentence_of_the_class(tmp_path, clip):
    kn = read_knowledge(write_standin(tmp_path / "k.json", "mvtec", ROWS))
    emb = knowledge_embeddings(kn, clip, {"tower": 2})
    bottle_imgs = [p for p, c, _ in ROWS if c == "bottle"]
    got = emb.vector("mvtec", "bottle", None, "class", bottle_imgs)
    s, n = emb.class_sum["mvtec/bottle"]
    for p in bottle_imgs:
        s, n = s + emb.image_sum[f"mvtec/{p}"][0], n + 1
    torch.testing.assert_close(got, s / n)
    assert emb.vector("mvtec", "screw", None) is None


def test_detector_skip_mode_gives_zero_kd_for_uncovered_images(tmp_path, clip):
    doc = _doc()
    del doc["classes"]["mvtec/metal_nut"]
    kn = read_knowledge(_write(tmp_path, doc))
    m = KAnoCLIPDetector(clip, KAnoCLIPConfig(prompt_length=2, knowledge_missing="skip"), backbone="glocal-tiny-8",
                         image_size=28)
    index = pd.DataFrame({"image_path": [p for p, _, _ in ROWS], "category": [c for _, c, _ in ROWS]})
    m.attach_knowledge(kn, "mvtec", index)
    wk, ok = m._knowledge_batch(["bottle", "metal_nut"], [ROWS[0][0], ROWS[2][0]], 2)
    assert ok.tolist() == [True, False] and torch.count_nonzero(wk[1]) == 0
    with pytest.raises(Exception, match="not in the index"):
        m._knowledge_batch(["bottle"], ["bottle/test/other.png"], 1)


def test_template_knowledge_is_one_sentence_per_class():
    kn = template_knowledge("mvtec", ["metal_nut", "bottle", "metal_nut"], "a photo of an abnormal {}.")
    assert kn.classes == {"mvtec/metal_nut": ("a photo of an abnormal metal nut.",),
                          "mvtec/bottle": ("a photo of an abnormal bottle.",)}
    assert FORMAT == "kanoclip-knowledge/v1"
