"""The small multimodal preset's defaults train a new dataset to what the network can learn, without tuning.

The dataset is generated here by another rule than the demo's: other words (a price judgement), another
image cue (a dark or a bright scene, shape colours random), and evidence that matters (one evidence text
says whether the shop was verified or reported). The label is the sum of the three cues cut into three
balanced classes, so each alone is not enough.
"""
import io
import json
import os

import numpy as np

from paddle_models.config import load_config
from paddle_models.engine.trainer import Trainer
from paddle_models.registry import get_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = os.path.join(ROOT, "configs", "multimodal", "jsonl_small.yaml")
LABELS = ["negative", "neutral", "positive"]
PRICE_WORDS = {0: ["overpriced", "a rip-off", "far too expensive"], 1: ["fairly priced", "reasonable", "okay value"],
               2: ["a bargain", "a steal", "great value"]}
ITEMS = ["these shoes", "the blender", "this lamp", "the headphones", "that jacket", "the desk", "this kettle"]
EVIDENCE = {0: ["Buyers reported the shop as a scam.", "The seller was flagged for fraud."],
            1: ["The shop was verified by the marketplace.", "The seller is a certified partner."]}
FILLER = ["Shipping took a week.", "Posted in the deals forum.", "Seen on a friend's feed."]
FILLER_WORDS = ["yesterday", "online", "after work", "with a coupon", "for my brother", "on sale", "again",
                "from the outlet", "last minute", "in blue", "as a gift", "before the holidays"]


def _image(rng, bright: int, size: int = 32) -> bytes:
    from PIL import Image

    base = rng.randint(135, 170) if bright else rng.randint(80, 115)  # 20 grey levels apart at least
    img = np.clip(base + rng.randint(-20, 21, size=(size, size, 3)), 0, 255)
    r, cx, cy = rng.randint(4, 9), rng.randint(9, size - 9), rng.randint(9, size - 9)
    yy, xx = np.mgrid[0:size, 0:size]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = rng.randint(0, 256, size=3)  # a distractor of any colour
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def make_dataset(root, sizes=(("train", 1000), ("val", 250), ("test", 250)), seed=7):
    for k, (split, n) in enumerate(sizes):
        rng = np.random.RandomState(seed + 101 * k)
        cells = np.tile(np.arange(12), n // 12 + 1)[:n][rng.permutation(n)]
        os.makedirs(os.path.join(root, "img", split), exist_ok=True)
        with open(os.path.join(root, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for i, c in enumerate(cells):
                t, v, e = int(c // 4), int(c % 4 // 2), int(c % 2)
                s = t + v + e
                label = 0 if s <= 1 else (1 if s == 2 else 2)
                rel = f"img/{split}/{i}.png"
                with open(os.path.join(root, rel), "wb") as g:
                    g.write(_image(rng, v))
                item = ITEMS[rng.randint(len(ITEMS))]
                filler = " ".join(rng.choice(FILLER_WORDS, size=rng.randint(1, 4)))
                text = f"Bought {item} {filler}: {PRICE_WORDS[t][rng.randint(3)]}."
                ev = [EVIDENCE[e][rng.randint(2)]] + ([FILLER[rng.randint(3)]] if rng.rand() < 0.5 else [])
                rng.shuffle(ev)
                f.write(json.dumps({"id": f"{split}-{i}", "text": text, "image": rel, "label": LABELS[label],
                                    "evidence_texts": ev}) + "\n")


def test_small_preset_defaults_converge_on_a_new_dataset(tmp_path):
    make_dataset(str(tmp_path / "data"))
    cfg = load_config(PRESET, [f"Data.root={tmp_path / 'data'}", f"Global.output_dir={tmp_path / 'run'}",
                               "Global.progress=false"])
    fit = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    assert fit["stop_reason"] in ("early_stopping", "epochs")
    ev_cfg = load_config(PRESET, [f"Data.root={tmp_path / 'data'}", f"Global.output_dir={tmp_path / 'run'}",
                                  "Global.progress=false", f"Global.checkpoint={tmp_path / 'run/checkpoints/best'}"])
    test = Trainer(ev_cfg, get_task("multimodal")(ev_cfg)).evaluate("test")
    assert test["macro_f1"] >= 0.95, (fit, test)


def test_summary_says_when_the_budget_ended_a_run_still_improving(tmp_path, caplog):
    make_dataset(str(tmp_path / "data"), sizes=(("train", 120), ("val", 60), ("test", 12)))
    cfg = load_config(PRESET, [f"Data.root={tmp_path / 'data'}", f"Global.output_dir={tmp_path / 'run'}",
                               "Global.progress=false", "Global.epochs=1"])
    with caplog.at_level("WARNING", logger="paddle_models"):
        fit = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    assert fit["stop_reason"] == "epochs" and fit["still_improving"] is True  # one evaluation: the best so far
    assert "while validation was still improving" in caplog.text and "Global.epochs" in caplog.text
