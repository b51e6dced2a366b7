"""Multimodal readers (MR2, MVSA, JSONL), image pipeline, bad-image policies, errors, collate."""
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from paddle_models.multimodal import dataset as D
from paddle_models.multimodal import images
from paddle_models.multimodal import tokenizer as tk
from paddle_models.multimodal.collate import MultimodalCollate


def _data_root():
    env = os.environ.get("PADDLE_MODELS_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


DATA = _data_root()
MR2 = DATA / "mr2_sample"
MVSA = DATA / "mvsa_single"
MEAN = np.array(images.IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
STD = np.array(images.IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not found (shared sample data absent; set PADDLE_MODELS_DATA)")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    r = random.Random(0)
    words = "red blue green cat dog movie great awful plain sunny rain photo post today".split()
    texts = [" ".join(r.choice(words) for _ in range(r.randint(2, 12))) for _ in range(300)]
    tk.train_tokenizer(texts, str(d), vocab_size=80)
    return tk.load_tokenizer(str(d))


def _save(arr, path, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


def _rgb(seed, h=40, w=40):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _jsonl(path, records):
    Path(path).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records),
                          encoding="utf-8")
    return path


SMALL = {"image_resize": 40, "image_crop": 32}


# ============================================================================ image pipeline
def _reference(rgb_uint8, crop):
    """numpy reference of CenterCrop + ToTensor + Normalize for an image already at its resize size."""
    h, w, _ = rgb_uint8.shape
    top, left = int(round((h - crop) / 2)), int(round((w - crop) / 2))
    x = rgb_uint8[top:top + crop, left:left + crop].astype(np.float32).transpose(2, 0, 1) / 255.0
    return (x - MEAN) / STD


def test_transform_matches_numpy_and_paddle_reference():
    from paddle.vision import transforms as T

    tr = images.ImageTransform(resize=40, crop=32)
    arr = _rgb(1, 40, 56)  # shorter side already 40: Resize is a no-op, only crop + normalize
    out = tr(Image.fromarray(arr))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(arr, 32), rtol=0, atol=1e-6)
    # the baseline's paddle.vision pipeline, on images that need resizing (both orientations)
    base = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(mean=list(images.IMAGENET_MEAN), std=list(images.IMAGENET_STD))])
    full = images.ImageTransform()
    for h, w in ((300, 451), (517, 260), (100, 100)):
        im = Image.fromarray(_rgb(h, h, w))
        np.testing.assert_allclose(full(im), base(im).numpy(), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="smaller than image_crop"):
        images.ImageTransform(resize=30, crop=32)


def test_gif_rgba_grey_and_16bit_to_rgb(tmp_path):
    rgb = _rgb(2)
    # GIF: palette image; first frame of an animation
    frames = [Image.fromarray(rgb).quantize(64), Image.fromarray(_rgb(3)).quantize(64)]
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    got = np.asarray(images.load_rgb(str(gif)))
    assert got.shape == (40, 40, 3)
    np.testing.assert_array_equal(got, np.asarray(frames[0].convert("RGB")))
    # RGBA PNG composited on white: out = a*rgb + (1-a)*255
    alpha = np.random.RandomState(4).randint(0, 256, (40, 40, 1)).astype(np.uint8)
    alpha[:5] = 0  # fully transparent rows become white
    png = _save(np.concatenate([rgb, alpha], axis=2), tmp_path / "a.png")
    got = np.asarray(images.load_rgb(str(png))).astype(np.float64)
    a = alpha.astype(np.float64) / 255.0
    ref = rgb * a + 255.0 * (1 - a)
    assert np.abs(got - ref).max() <= 1.0
    assert (got[:5] == 255).all()
    # greyscale (L) and 16-bit greyscale: three equal channels
    grey = rgb[..., 0]
    got = np.asarray(images.load_rgb(str(_save(grey, tmp_path / "g.png"))))
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, axis=2))
    g16 = (grey.astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(images.load_rgb(str(tmp_path / "g16.png")))
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, axis=2))
    # palette PNG with a transparent index
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    got = np.asarray(images.load_rgb(str(tmp_path / "p.png")))
    idx = np.asarray(Image.open(tmp_path / "p.png"))
    assert (got[idx == 0] == 255).all()
    # the whole pipeline on a GIF: normalized values as the numpy reference of its RGB pixels
    tr = images.ImageTransform(resize=40, crop=32)
    np.testing.assert_allclose(tr(images.load_rgb(str(gif))), _reference(np.asarray(frames[0].convert("RGB")), 32),
                               atol=1e-6)


# ============================================================================ JSONL
def _jsonl_tree(tmp_path, n=6, evidence=True):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    recs = []
    for i in range(n):
        _save(_rgb(i, 44, 48), root / "img" / f"{i}.png")
        ev = []
        if evidence:
            for k in range(i % 3):
                _save(_rgb(100 + 10 * i + k, 40, 40), root / "img" / f"{i}_e{k}.png")
                ev.append(f"img/{i}_e{k}.png")
        recs.append({"id": f"p{i}", "text": "great movie " * (i + 1), "image": f"img/{i}.png",
                     "label": ["negative", "neutral", "positive"][i % 3] if i % 2 else i % 3,
                     "evidence_texts": ["red cat"] * (i % 4), "evidence_images": ev})
    for split in ("train", "val", "test"):
        _jsonl(root / f"{split}.jsonl", recs)
    return root, recs


def test_jsonl_reader_and_items(tmp_path):
    root, recs = _jsonl_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train")
    assert len(ds) == 6 and ds.ids == [r["id"] for r in recs]
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2]   # names and indices both resolve
    item = ds[5]
    assert item["text"] == recs[5]["text"] and item["captions"] == ["red cat"]
    assert item["image"].shape == (3, 32, 32) and item["evidence_images"].shape == (2, 3, 32, 32)
    ref = np.asarray(Image.open(root / "img" / "5_e1.png").convert("RGB").resize((40, 40)))
    np.testing.assert_allclose(item["evidence_images"][1], _reference(ref, 32), atol=1e-6)
    # limits and modality switches
    ds = D.build_dataset({"format": "jsonl", "root": str(root), "max_captions": 2,
                          "max_evidence_images": 1, **SMALL}, "train")
    assert len(ds[3]["captions"]) == 2 and ds[5]["evidence_images"].shape[0] == 1
    ds = D.build_dataset({"format": "jsonl", "root": str(root), "max_captions": 0, "max_evidence_images": 0,
                          "limit": 4, **SMALL}, "train")
    assert len(ds) == 4 and ds[3]["captions"] == [] and ds[2]["evidence_images"].shape[0] == 0
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train", use_image=False)
    assert ds[5]["image"] is None and ds[5]["evidence_images"].shape == (0, 3, 32, 32)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train", use_text=False)
    assert ds[5]["captions"] == [] and ds[5]["image"] is not None
    # label names come from config: the file's names must be among them
    with pytest.raises(images.DataError, match=r"line 2 \(id p1\): label: 'neutral' is not one of the label "
                                          r"names \(a, b, c\)"):
        D.build_dataset({"format": "jsonl", "root": str(root), "label_names": ["a", "b", "c"]}, "test")
    ds = D.build_dataset({"format": "jsonl", "root": str(root), "label_names": ["x", "negative", "neutral",
                                                                               "positive"], **SMALL}, "test")
    assert ds.num_classes == 4 and ds.labels.tolist() == [0, 2, 2, 1, 1, 3]  # indices as given, names looked up


def test_jsonl_unlabelled_test_split(tmp_path):
    root, recs = _jsonl_tree(tmp_path, n=3)
    _jsonl(root / "test.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in recs])
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "test")
    assert ds.labels.tolist() == [-1, -1, -1]
    with pytest.raises(images.DataError, match=r"test.jsonl: line 1 \(id p0\): label: missing"):
        D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "test", require_label=True)


@pytest.mark.parametrize("line,lineno,pattern", [
    ('{"id": "x", "text": "ok", "image": "img/0.png", "label": 0', 2, r"line 2: invalid JSON"),
    ('[1, 2]', 2, r"line 2: expected a JSON object"),
    ({"id": "x", "image": "img/0.png", "label": 0}, 2, r"line 2 \(id x\): text: missing field"),
    ({"id": "x", "text": "  ", "image": "img/0.png", "label": 0}, 2,
     r"line 2 \(id x\): text: empty text \(set Data.allow_empty_text=true"),
    ({"id": "x", "text": 5, "image": "img/0.png", "label": 0}, 2, r"line 2 \(id x\): text: expected a string"),
    ({"id": "x", "text": "ok", "image": "img/0.png", "label": "happy"}, 2,
     r"line 2 \(id x\): label: 'happy' is not one of the label names \(negative, neutral, positive\)"),
    ({"id": "x", "text": "ok", "image": "img/0.png", "label": 3}, 2,
     r"line 2 \(id x\): label: index 3 is outside the label set 0..2"),
    ({"id": "x", "text": "ok", "label": 1}, 2, r"line 2 \(id x\): image: missing field"),
    ({"id": "x", "text": "ok", "image": "../outside.png", "label": 1}, 2,
     r"line 2 \(id x\): image: path '../outside.png' escapes the data root"),
    ({"id": "x", "text": "ok", "image": "/etc/passwd", "label": 1}, 2,
     r"line 2 \(id x\): image: path '/etc/passwd' escapes the data root"),
    ({"id": "x", "text": "ok", "image": "img/0.png", "label": 1, "evidence_images": ["img/../../e.png"]}, 2,
     r"line 2 \(id x\): evidence_images\[0\]: path 'img/../../e.png' escapes the data root"),
    ({"id": "x", "text": "ok", "image": "img/0.png", "label": 1, "evidence_texts": "not a list"}, 2,
     r"line 2 \(id x\): evidence_texts: expected a list of strings"),
    ({"id": "p0", "text": "ok", "image": "img/0.png", "label": 1}, 2, r"line 2: id: 'p0' already used on line 1"),
    ({"id": "x", "text": "ok", "image": "img/0.png"}, 2, r"line 2 \(id x\): label: missing"),
])
def test_jsonl_bad_records(tmp_path, line, lineno, pattern):
    root, recs = _jsonl_tree(tmp_path, n=1, evidence=False)
    _jsonl(root / "train.jsonl", [recs[0], line])
    with pytest.raises(images.DataError, match=pattern) as e:
        D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train")
    assert str(root / "train.jsonl") in str(e.value)


# ============================================================================ bad images
def _bad_image_tree(tmp_path):
    root, recs = _jsonl_tree(tmp_path, n=3)
    (root / "img" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    recs[0]["image"] = "img/missing.png"                                  # missing post image
    recs[2]["evidence_images"] = ["img/2_e0.png", "img/corrupt.png", "img/2_e1.png"]  # corrupt evidence
    _jsonl(root / "train.jsonl", recs)
    return root


def test_bad_image_error_names_item_and_file(tmp_path):
    root = _bad_image_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train")
    with pytest.raises(images.DataError, match=r"line 1 \(id p0\): image 'img/missing.png': file not found"):
        ds[0]
    with pytest.raises(images.DataError,
                       match=r"line 3 \(id p2\): evidence_images\[1\] 'img/corrupt.png': cannot decode image"):
        ds[2]


@pytest.mark.parametrize("policy", ["skip", "blank"])
def test_bad_image_skip_and_blank(tmp_path, tok, policy):
    root = _bad_image_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), "on_bad_image": policy, **SMALL}, "train")
    items = [ds[i] for i in range(len(ds))]
    if policy == "skip":                    # the item whose post image is missing is dropped
        assert ds.ids == ["p1", "p2"] and ds.skipped_items == ["p0"]
    else:                                   # ... or kept with a blank image
        assert ds.ids == ["p0", "p1", "p2"] and not items[0]["image"].any()
    ev = items[-1]["evidence_images"]
    assert ev.shape[0] == (2 if policy == "skip" else 3)  # the corrupt evidence image: dropped / zeros
    tr = images.ImageTransform(40, 32)
    np.testing.assert_array_equal(ev[-1], tr(images.load_rgb(str(root / "img" / "2_e1.png"))))
    if policy == "blank":
        assert not ev[1].any()
    # reading again (a later epoch) does not count twice
    ds[len(ds) - 1], ds[0]
    s = ds.summary()
    assert (s["bad_images"], s["items_with_bad_images"], s["on_bad_image"]) == (2, 2, policy)
    assert s["skipped_items"] == (1 if policy == "skip" else 0)
    batch = MultimodalCollate(tok, image_size=32)(items)
    n_ev = ev.shape[0]
    assert batch["evidence_mask"].shape == (len(items), n_ev)
    assert batch["evidence_mask"][-1].tolist() == [1.0] * n_ev


def test_bad_image_counts_across_workers(tmp_path, tok):
    import paddle

    root = _bad_image_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), "on_bad_image": "blank", **SMALL}, "train")
    loader = paddle.io.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False,
                                  collate_fn=MultimodalCollate(tok, image_size=32, ids_as_list=True))
    seen = []
    for _ in range(2):  # two epochs
        for batch in loader:
            assert isinstance(batch["input_ids"], paddle.Tensor)
            seen.extend(batch["id"])
    assert sorted(seen) == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert ds.summary()["bad_images"] == 2


# ============================================================================ collate
def test_collate_shapes_masks_and_padding(tmp_path, tok):
    root, recs = _jsonl_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train")
    items = [ds[i] for i in (0, 3, 5)]
    col = MultimodalCollate(tok, max_len=10, image_size=32)
    b = col(items)
    enc = [tok(items[i]["text"], max_length=10, truncation=True)["input_ids"] for i in range(3)]
    L = max(len(e) for e in enc)
    assert len(tok(items[2]["text"])["input_ids"]) > 10   # item 5's text is longer than max_len...
    assert L == 10 and len(enc[0]) < 10 and col.truncated >= 1  # ...and truncated, not an error
    assert b["input_ids"].shape == (3, L) and b["input_ids"].dtype == np.int64
    for i, e in enumerate(enc):                   # same ids as the tokenizer's own truncation
        assert b["input_ids"][i, :len(e)].tolist() == e
        assert b["attention_mask"][i].tolist() == [1] * len(e) + [0] * (L - len(e))
        assert (b["input_ids"][i, len(e):] == tok.pad_token_id).all()
    nc = max(len(x["captions"]) for x in items)
    assert b["caption_ids"].shape == (3, nc, L) and b["caption_mask"].shape == (3, nc, L)
    assert b["caption_mask"][0].sum() == 0        # item 0 has no captions: all-zero rows
    assert b["caption_mask"][1].sum(axis=1).tolist() == [len(tok("red cat")["input_ids"])] * 3
    assert b["image"].shape == (3, 3, 32, 32) and b["image"].dtype == np.float32
    np.testing.assert_array_equal(b["image"][2], items[2]["image"])
    assert b["evidence_images"].shape == (3, 2, 3, 32, 32)
    assert b["evidence_mask"].tolist() == [[0, 0], [0, 0], [1, 1]] and b["evidence_mask"].dtype == np.float32
    assert np.all(b["evidence_images"][:2] == 0)
    assert b["label"].tolist() == [0, 0, 2] and b["label"].dtype == np.int64
    assert b["id"].tolist() == ["p0", "p3", "p5"] and b["id"].dtype.kind == "U"
    assert MultimodalCollate(tok, image_size=32, ids_as_list=True)(items)["id"] == ["p0", "p3", "p5"]
    # short batch: L is the longest text, not max_len; pad_to_max_len pads to max_len
    short = col([items[0]])
    assert short["input_ids"].shape == (1, len(enc[0]))
    assert short["caption_ids"].shape == (1, 1, len(enc[0])) and short["evidence_mask"].shape == (1, 1)
    fixed = MultimodalCollate(tok, max_len=16, pad_to_max_len=True, image_size=32)([items[0]])
    assert fixed["input_ids"].shape == (1, 16) and fixed["caption_ids"].shape == (1, 1, 16)


def test_collate_modalities(tmp_path, tok):
    root, _ = _jsonl_tree(tmp_path)
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train", use_image=False)
    b = MultimodalCollate(tok, image_size=32, use_image=False)([ds[i] for i in range(6)])
    assert b["image"].shape == (6, 3, 32, 32) and not b["image"].any()
    assert b["evidence_images"].shape == (6, 1, 3, 32, 32) and not b["evidence_mask"].any()
    ds = D.build_dataset({"format": "jsonl", "root": str(root), **SMALL}, "train", use_text=False)
    b = MultimodalCollate(tok, image_size=32, use_text=False)([ds[i] for i in range(6)])
    assert b["input_ids"].tolist() == [[tok.cls_token_id, tok.sep_token_id]] * 6
    assert b["caption_ids"].shape == (6, 1, 2) and not b["caption_mask"].any()
    assert b["image"].any()


# ============================================================================ MR2 (real files)
def _baseline_captions(inv, direct):
    """The baseline loader's caption list, written from its description."""
    def clean(s):
        return s.replace("&#39;", " ").replace("<b>", "").replace("</b>", "")
    caps = [""]
    for key in ("all_fully_matched_captions", "all_partially_matched_captions"):
        for page in inv.get(key, []):
            if "title" in page:
                caps.append(clean(page["title"]))
            if "caption" in page:
                seen = []
                for v in page["caption"].values():
                    if v not in seen:
                        seen.append(v)
                        caps.append(clean(v))
    for key in ("partially_matched_no_text", "fully_matched_no_text"):
        caps += [clean(p["title"]) for p in inv.get(key, []) if "title" in p]
    caps.append("")
    for key in ("images_with_captions", "images_with_no_captions", "images_with_caption_matched_tags"):
        for page in direct.get(key, []):
            if "page_title" in page:
                caps.append(clean(page["page_title"]))
    return caps


def test_mr2_weibo_item_with_evidence():
    root = MR2 / "Weibo"
    _need(root / "dataset_items_val.json")
    raw = json.loads((root / "dataset_items_val.json").read_text(encoding="utf-8"))
    ds = D.build_dataset({"format": "mr2", "root": str(root), "on_bad_image": "blank", "allow_empty_text": True,
                          "max_captions": -1, "max_evidence_images": -1}, "val")  # all, as the baseline
    assert len(ds) == len(raw) and ds.ids == list(raw)
    assert ds.labels.tolist() == [v["label"] for v in raw.values()]
    assert ds.label_names == ["non-rumor", "rumor", "unverified"]
    item = ds[0]
    inv = json.loads((root / raw["0"]["inv_path"] / "inverse_annotation.json").read_text(encoding="utf-8"))
    direct = json.loads((root / raw["0"]["direct_path"] / "direct_annotation.json").read_text(encoding="utf-8"))
    assert item["text"] == raw["0"]["caption"]
    assert item["captions"] == _baseline_captions(inv, direct)
    names = [p["image_path"].split("/")[-1] for k in ("images_with_captions", "images_with_no_captions")
             for p in direct.get(k, [])]
    assert item["evidence_images"].shape == (len(names), 3, 224, 224)
    tr = images.ImageTransform()
    np.testing.assert_allclose(item["image"], tr(images.load_rgb(str(root / raw["0"]["image_path"]))), atol=0)
    np.testing.assert_allclose(item["evidence_images"][-1],
                               tr(images.load_rgb(str(root / raw["0"]["direct_path"] / names[-1]))), atol=0)
    assert ds.summary()["bad_images"] == 0
    # clean captions: no empty entries
    ds2 = D.build_dataset({"format": "mr2", "root": str(root), "on_bad_image": "blank", "allow_empty_text": True,
                           "mr2_baseline_captions": False, "max_captions": 3}, "val")
    caps = ds2[0]["captions"]
    assert caps == [c for c in _baseline_captions(inv, direct) if c.strip()][:3]


def test_mr2_missing_files_policies_and_text_only():
    root = MR2 / "Weibo"
    _need(root / "dataset_items_val.json")
    cfg = {"format": "mr2", "root": str(root), "allow_empty_text": True}
    ds = D.build_dataset(cfg, "val")
    with pytest.raises(images.DataError, match=r'dataset_items_val.json: item "1": image_path \'val/img/1.jpg\': '
                                          r'file not found'):
        ds[1]
    ds = D.build_dataset({**cfg, "on_bad_image": "blank"}, "val")
    item = ds[1]
    assert item["captions"] == ["", ""] and item["evidence_images"].shape[0] == 0 and not item["image"].any()
    s = ds.summary()
    assert (s["bad_images"], s["missing_annotation_files"]) == (1, 2)
    ds = D.build_dataset({**cfg, "on_bad_image": "skip"}, "val")   # only item "0" has its image here
    assert ds.ids == ["0"] and ds.summary()["skipped_items"] == 713
    assert ds[0]["evidence_images"].shape[0] == 5
    # text only: images never opened, the default error policy is fine
    ds = D.build_dataset(cfg, "val", use_image=False)
    assert ds[1]["image"] is None and ds[1]["text"] == "突发"
    # the real file has an empty post (item "21"): a clear error unless allowed
    with pytest.raises(images.DataError, match=r'item "21": caption: empty text'):
        D.build_dataset({"format": "mr2", "root": str(root)}, "val")


def test_mr2_twitter_text_only():
    root = MR2 / "Twitter"
    _need(root / "dataset_items_val.json")
    raw = json.loads((root / "dataset_items_val.json").read_text(encoding="utf-8"))
    ds = D.build_dataset({"format": "mr2", "root": str(root)}, "val", use_image=False)
    assert len(ds) == len(raw)
    assert ds[3]["text"] == raw["3"]["caption"] and ds.labels[3] == raw["3"]["label"]


def test_mr2_bad_records(tmp_path):
    root = tmp_path / "mr2"
    root.mkdir()
    f = root / "dataset_items_test.json"
    f.write_text(json.dumps({"0": {"caption": "a", "image_path": "test/img/0.jpg"},
                             "1": {"caption": "b", "image_path": "test/img/1.jpg",
                                   "inv_path": "../../etc"}}))
    with pytest.raises(images.DataError, match=r'dataset_items_test.json: item "1": inv_path: path \'../../etc\' '
                                          r'escapes the data root'):
        D.build_dataset({"format": "mr2", "root": str(root)}, "test")
    f.write_text(json.dumps({"0": {"caption": "a", "image_path": "x.jpg", "label": 7}}))
    with pytest.raises(images.DataError, match=r'item "0": label: index 7 is outside the label set 0..2'):
        D.build_dataset({"format": "mr2", "root": str(root)}, "test")
    f.write_text('{"0": {"caption": "a",}')
    with pytest.raises(images.DataError, match=r"dataset_items_test.json: invalid JSON at line 1"):
        D.build_dataset({"format": "mr2", "root": str(root)}, "test")
    # unlabelled test split; a malformed annotation names the item and the field
    f.write_text(json.dumps({"0": {"caption": "a", "image_path": "x.jpg", "direct_path": "d0"}}))
    (root / "d0").mkdir()
    (root / "d0" / "direct_annotation.json").write_text("{oops")
    ds = D.build_dataset({"format": "mr2", "root": str(root)}, "test", use_image=False)
    assert ds.labels.tolist() == [-1]
    with pytest.raises(images.DataError, match=r'item "0": direct_path: .*direct_annotation.json: invalid JSON'):
        ds[0]


# ============================================================================ MVSA (real files)
def test_mvsa_reader():
    _need(MVSA / "train.json")
    raw = {s: json.loads((MVSA / f"{s}.json").read_text(encoding="utf-8")) for s in ("train", "dev", "test")}
    cfg = {"format": "mvsa", "root": str(MVSA)}
    ds = D.build_dataset(cfg, "val", use_image=False)     # val reads dev.json
    assert len(ds) == len(raw["dev"]) and ds.ids == [r["id"] for r in raw["dev"]]
    assert ds.labels.tolist() == [r["emotion_label"] for r in raw["dev"]]
    assert ds.label_names == ["positive", "neutral", "negative"]
    assert ds[0]["text"] == raw["dev"][0]["text"] and ds[0]["image"] is None
    # the project's label order: indices remapped by name (0 positive -> 2)
    ds = D.build_dataset({**cfg, "label_names": ["negative", "neutral", "positive"]}, "train", use_image=False)
    assert ds.labels.tolist() == [2 - r["emotion_label"] for r in raw["train"]]
    with pytest.raises(ValueError, match="MVSA here has no images"):
        D.build_dataset(cfg, "test")
    with pytest.raises(images.DataError, match="must name the same classes"):
        D.build_dataset({**cfg, "label_names": ["a", "b", "c"]}, "test", use_image=False)


def test_mvsa_bad_records(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([{"id": "1", "text": "ok", "emotion_label": 0},
                                                     {"id": "2", "text": "ok", "emotion_label": 5}]))
    with pytest.raises(images.DataError, match=r"train.json: record 1 \(id 2\): emotion_label: index 5 is outside"):
        D.build_dataset({"format": "mvsa", "root": str(tmp_path)}, "train", use_image=False)


def test_build_dataset_config_errors(tmp_path):
    with pytest.raises(ValueError, match="Data.format: unknown format 'csv'"):
        D.build_dataset({"format": "csv", "root": str(tmp_path)}, "train")
    with pytest.raises(ValueError, match="Data.root: not set"):
        D.build_dataset({"format": "jsonl"}, "train")
    with pytest.raises(images.DataError, match=r"train.jsonl: file not found"):
        D.build_dataset({"format": "jsonl", "root": str(tmp_path)}, "train")
    root, _ = _jsonl_tree(tmp_path, n=1, evidence=False)
    with pytest.raises(ValueError, match="Data.on_bad_image must be one of error, skip, blank"):
        D.build_dataset({"format": "jsonl", "root": str(root), "on_bad_image": "ignore"}, "train")
    (root / "img" / "0.png").unlink()
    with pytest.raises(images.DataError, match=r"train.jsonl: all 1 items were skipped \(Data.on_bad_image=skip\)"):
        D.build_dataset({"format": "jsonl", "root": str(root), "on_bad_image": "skip"}, "train")
