"""Bad input, end to end through the engine: each case gives an error naming the file, the record and the
field, and nothing is written half-way (no checkpoint, no tokenizer for a failed run)."""
import json
import os

import numpy as np
import pytest

from paddle_models import ConfigError, get_task, load_config
from paddle_models.engine.trainer import Trainer

from conftest import ROOT

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")


def png(path, size=32):
    from PIL import Image

    Image.fromarray(np.full((size, size, 3), 128, "uint8")).save(path)


def tree(tmp_path, n=12):
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    recs = []
    for i in range(n):
        png(root / "img" / f"{i}.png")
        recs.append({"id": f"p{i}", "text": f"post number {i} is good", "image": f"img/{i}.png",
                     "label": ["negative", "neutral", "positive"][i % 3]})
    return root, recs


def write_jsonl(path, recs, raw_lines=()):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")


def fit(root, out, *extra):
    cfg = load_config(CFG, [f"Data.root={root}", f"Global.output_dir={out}", "Global.epochs=1",
                            "Global.batch_size=4", "Global.progress=false", *extra])
    return Trainer(cfg, get_task("multimodal")(cfg)).fit()


def nothing_written(out):
    ck = out / "checkpoints"
    return not ck.exists() or not any(ck.iterdir())


def case(tmp_path, mutate, raw_lines=(), extra=()):
    root, recs = tree(tmp_path)
    write_jsonl(root / "val.jsonl", recs[:3])  # a valid validation split
    mutate(root, recs)
    write_jsonl(root / "train.jsonl", recs, raw_lines)
    out = tmp_path / "out"
    with pytest.raises(Exception) as e:
        fit(root, out, *extra)
    return str(e.value), root, out


CASES = {
    "malformed JSONL line": (lambda root, recs: None, ['{"id": "bad", "text": "x", '], r"train.jsonl: line 13: invalid JSON"),
    "missing field": (lambda root, recs: recs[4].pop("text"), (), r"train.jsonl: line 5 \(id p4\): text: missing field"),
    "label outside the label set": (lambda root, recs: recs[2].update(label="furious"), (),
                                    r"line 3 \(id p2\): label: 'furious' is not one of the label names"),
    "empty text": (lambda root, recs: recs[1].update(text="  "), (), r"line 2 \(id p1\): text: empty"),
    "image path escapes the data root": (lambda root, recs: recs[6].update(image="../../etc/passwd"), (),
                                         r"line 7 \(id p6\): image: path '../../etc/passwd' escapes the data root"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_records_fail_before_anything_is_written(tmp_path, name):
    mutate, raw, pattern = CASES[name]
    msg, root, out = case(tmp_path, mutate, raw)
    import re

    assert re.search(pattern, msg), msg
    assert str(root / "train.jsonl") in msg
    assert nothing_written(out)
    assert not (out / "tokenizer" / "vocab.txt").exists()


@pytest.mark.parametrize("kind", ["missing", "not an image"])
def test_bad_image_names_item_and_file(tmp_path, kind):
    def mutate(root, recs):
        if kind == "missing":
            recs[5]["image"] = "img/nope.png"
        else:
            (root / "img" / "fake.png").write_text("this is a text file, not a picture")
            recs[5]["image"] = "img/fake.png"

    msg, root, out = case(tmp_path, mutate)
    target = "nope.png" if kind == "missing" else "fake.png"
    assert "p5" in msg and target in msg and "image" in msg, msg
    assert nothing_written(out)


def test_text_far_longer_than_the_limit_is_truncated(tmp_path):
    root, recs = tree(tmp_path)
    recs[0]["text"] = " ".join(["word"] * 5000)
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:3])
    res = fit(root, tmp_path / "out")
    assert res["steps"] == 3 and os.path.isfile(res["best_checkpoint"])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"-o Global.epoch=1: unknown key 'Global.epoch'"):
        load_config(CFG, ["Global.epoch=1"])
    with pytest.raises(ConfigError, match=r"Global.batch_size: expected int, got str \('big'\)"):
        load_config(CFG, ["Global.batch_size=big"])
