"""Synthetic demo data: deterministic, right sizes, readable by the JSONL reader, and its label needs
both modalities (single-modality classifiers stay below 0.75 macro-F1, both together pass 0.9)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paddle_models.metrics import classification_report
from paddle_models.multimodal import demo_data as dd
from paddle_models.multimodal.dataset import build_dataset

REPO = Path(__file__).resolve().parents[1]


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_sizes_and_readable(tmp_path):
    a = dd.make_demo_data(str(tmp_path / "a"), 45, 18, 18, seed=7)
    dd.make_demo_data(str(tmp_path / "b"), 45, 18, 18, seed=7)
    da, db = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert da == db and len(da) > 45 + 18 + 18
    dd.make_demo_data(str(tmp_path / "c"), 45, 18, 18, seed=8)
    assert _tree_digest(tmp_path / "c")["train.jsonl"] != da["train.jsonl"]
    # a smaller rerun into the same folder leaves no stale images
    dd.make_demo_data(str(tmp_path / "a"), 9, 9, 9, seed=7)
    assert len(list((tmp_path / "a" / "images" / "train").glob("0001*.png"))) == 0
    dd.make_demo_data(str(tmp_path / "a"), 45, 18, 18, seed=7)
    assert _tree_digest(tmp_path / "a") == da

    assert {k: v["items"] for k, v in a["splits"].items()} == {"train": 45, "val": 18, "test": 18}
    assert a["splits"]["train"]["labels"] == {"negative": 15, "neutral": 15, "positive": 15}
    recs = [json.loads(line) for line in (tmp_path / "b" / "train.jsonl").read_text().splitlines()]
    assert len(recs) == 45 and len({r["id"] for r in recs}) == 45
    for r in recs:
        assert r["label"] == dd.LABEL_NAMES[dd.label_of(r["text_attr"], r["image_attr"])]
        im = Image.open(tmp_path / "b" / r["image"])
        assert im.size == (64, 64) and im.mode == "RGB"
    assert any(len(r["evidence_images"]) == 0 for r in recs) and any(len(r["evidence_images"]) == 2 for r in recs)
    assert any(r["evidence_texts"] for r in recs)
    ds = build_dataset({"format": "jsonl", "root": str(tmp_path / "b"), "image_resize": 64,
                        "image_crop": 64}, "val")
    item = ds[0]
    assert len(ds) == 18 and item["image"].shape == (3, 64, 64)
    assert ds.labels.tolist() == [dd.LABEL_NAMES.index(json.loads(line)["label"])
                                  for line in (tmp_path / "b" / "val.jsonl").read_text().splitlines()]


def _features(split, n, index, rule):
    recs, images = dd.generate_split(split, n, 2026, 64, rule, index, as_arrays=True)
    pixels = dict(images)
    colour = np.array([pixels[r["image"]].astype(np.float64).mean((0, 1)) for r in recs]) / 255.0
    y = np.array([dd.LABEL_NAMES.index(r["label"]) for r in recs])
    return [r["text"] for r in recs], colour, y


@pytest.mark.parametrize("rule", ["sum", "mod"])
def test_label_needs_both_modalities(rule):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import PolynomialFeatures

    tr_text, tr_col, ytr = _features("train", 900, 0, rule)
    va_text, va_col, yva = _features("val", 450, 1, rule)
    vec = CountVectorizer().fit(tr_text)
    bow_tr, bow_va = vec.transform(tr_text).toarray(), vec.transform(va_text).toarray()
    mu, sd = tr_col.mean(0), tr_col.std(0)
    col_tr, col_va = (tr_col - mu) / sd, (va_col - mu) / sd

    def macro_f1(xtr, xva):
        model = LogisticRegression(max_iter=3000).fit(xtr, ytr)
        return classification_report(yva, model.predict(xva), 3)["macro_f1"]

    text_only = macro_f1(bow_tr, bow_va)
    image_only = macro_f1(PolynomialFeatures(2).fit_transform(col_tr), PolynomialFeatures(2).fit_transform(col_va))

    def both(bow, col):  # bag of words, colour and their products (interaction)
        return np.hstack([bow, col, (bow[:, :, None] * col[:, None, :]).reshape(len(bow), -1)])

    combined = macro_f1(both(bow_tr, col_tr), both(bow_va, col_va))
    assert text_only < 0.75 and image_only < 0.75, (text_only, image_only)
    assert combined > 0.9, combined


def test_cli(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_demo_data.py"), "--out", str(tmp_path / "d"),
                           "--train", "20", "--val", "10", "--test", "10", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["splits"]["test"]["items"] == 10 and (tmp_path / "d" / "test.jsonl").is_file()
