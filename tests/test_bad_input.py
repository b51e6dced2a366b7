"""Bad input, end to end through the engine: each case gives an error naming the file, the record and the
field, and nothing is written half-way (no checkpoint, no tokenizer for a failed run)."""
import json
import os

import numpy as np
import pytest
from conftest import ROOT

from paddle_models import ConfigError, get_task, load_config
from paddle_models.engine.trainer import Trainer

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
    "malformed JSONL line": (lambda root, recs: None, ['{"id": "bad", "text": "x", '],
                             r"train.jsonl: line 13: invalid JSON"),
    "missing field": (lambda root, recs: recs[4].pop("text"), (),
                      r"train.jsonl: line 5 \(id p4\): text: missing field"),
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


# ---- the "fail loudly" cases: silent wrong results, tracebacks, smaller ones ---------------------------
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402

EVAL = str(ROOT / "tools" / "eval.py")
INFER = str(ROOT / "tools" / "infer.py")


def trained_run(tmp_path, *extra):
    """A finished 1-epoch run on a 12-item tree: (data root, run folder)."""
    root, recs = tree(tmp_path)
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:6])
    out = tmp_path / "run"
    fit(root, out, *extra)
    return root, out


def evaluate(root, out, *extra):
    cfg = load_config(CFG, [f"Data.root={root}", f"Global.output_dir={out}", "Global.progress=false", *extra])
    return Trainer(cfg, get_task("multimodal")(cfg)).evaluate("val")


def tool(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    return subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)


def test_checkpoint_without_its_tokenizer_is_refused(tmp_path):
    root, run = trained_run(tmp_path)
    lone = tmp_path / "elsewhere" / "weights"
    lone.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "best" / "model.safetensors", lone / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"Global.checkpoint=.*no tokenizer found for these weights.*"
                                                r"set Data.tokenizer"):
        evaluate(root, tmp_path / "eval_out", f"Global.checkpoint={lone / 'model.safetensors'}")
    assert not (tmp_path / "eval_out" / "tokenizer" / "vocab.txt").exists()


def test_checkpoint_with_another_tokenizer_is_refused(tmp_path, tiny_demo):
    from paddle_models.engine.checkpoint import CheckpointError
    from paddle_models.engine.export import build_for_export

    root, run = trained_run(tmp_path)
    state = json.loads((run / "checkpoints" / "best" / "trainer.json").read_text())
    assert state["preprocessing"]["kind"] == "tokenizer" and len(state["preprocessing"]["sha256"]) == 64
    best = run / "checkpoints" / "best"
    other = tiny_demo / "tok"
    with pytest.raises(CheckpointError) as e:
        evaluate(root, run, f"Global.checkpoint={best}", f"Data.tokenizer={other}")
    msg = str(e.value)
    assert str(run / "tokenizer") in msg and str(other) in msg and msg.count("sha256") == 2, msg
    cfg = load_config(CFG, [f"Data.root={root}", f"Global.output_dir={run}", f"Global.checkpoint={best}",
                            f"Data.tokenizer={other}"])
    with pytest.raises(CheckpointError, match="trained with the tokenizer"):
        build_for_export(cfg)
    assert evaluate(root, run, f"Global.checkpoint={best}")["samples"] == 6  # its own tokenizer is fine


def test_second_run_into_a_locked_output_folder_is_refused(tmp_path):
    from paddle_models.engine.runlock import OutputLockedError

    root, recs = tree(tmp_path)
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:3])
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'training: pid {os.getpid()} on here'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"another run is writing this output folder .*pid {holder.pid}"):
            fit(root, out)
        assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path, caplog):
    root, recs = tree(tmp_path)
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:3])
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text("training: pid 999999 on a-host\n")  # left by a killed run: nobody holds it
    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        res = fit(root, out)
    assert res["steps"] == 3
    assert "taking over the lock left by a run that is no longer alive (training: pid 999999" in caplog.text
    assert not (out / ".lock").exists()  # released at the end


def bomb_png(path, side=30000):
    """A PNG whose header claims side x side pixels (a decompression bomb), with one tiny IDAT chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def half_jpeg(path):
    from PIL import Image

    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (64, 64, 3)).astype("uint8")).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_skip_drops_items_whose_post_image_does_not_decode(tmp_path, caplog):
    from paddle_models.multimodal.dataset import build_dataset

    root, recs = tree(tmp_path)
    bomb_png(root / "img" / "bomb.png")
    half_jpeg(root / "img" / "half.jpg")
    recs[2]["image"], recs[7]["image"] = "img/bomb.png", "img/half.jpg"
    write_jsonl(root / "train.jsonl", recs)
    cfg = load_config(CFG, [f"Data.root={root}", "Data.on_bad_image=skip"])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg["Data"], "train")
    assert len(ds) == 10 and ds.summary()["skipped_items"] == 2 and "p2" not in ds.ids and "p7" not in ds.ids
    assert "skipped 2 of 12 items whose post image is missing or cannot be decoded" in caplog.text
    assert ("line 3 (id p2): img/bomb.png: cannot decode image (ValueError: image too large to decode safely"
            in caplog.text)


@pytest.mark.parametrize("side", [30000, 7000])  # beyond PIL's own limit, and beyond only ours (40 Mpx)
def test_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    from paddle_models.multimodal.images import check_image, load_rgb

    bomb_png(tmp_path / "bomb.png", side)
    for fn in (load_rgb, check_image):
        with pytest.raises(ValueError, match="image too large to decode safely"):
            fn(str(tmp_path / "bomb.png"))


@pytest.mark.parametrize("override, key", [
    ("Global.epochs=-3", "Global.epochs: must be >= 1, got -3"),
    ("Global.epochs=0", "Global.epochs: must be >= 1, got 0"),
    ("Data.limit=-5", "Data.limit: must be >= 0, got -5"),
    ("Global.batch_size=0", "Global.batch_size: must be >= 1, got 0"),
    ("Global.eval_batch_size=0", "Global.eval_batch_size: must be >= 1, got 0"),
    ("Global.accum_steps=0", "Global.accum_steps: must be >= 1, got 0"),
    ("Global.max_steps=-1", "Global.max_steps: must be >= 0, got -1"),
    ("Optimizer.lr=0", "Optimizer.lr: must be > 0, got 0.0"),
    ("Optimizer.lr=-1e-3", "Optimizer.lr: must be > 0, got -0.001"),
])
def test_config_ranges_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"-o {override}: {key}")):
        load_config(CFG, [override])


def test_config_file_values_are_range_checked_too(tmp_path):
    p = tmp_path / "c.yaml"
    text = (ROOT / "configs" / "multimodal" / "jsonl_small.yaml").read_text()
    p.write_text(re.sub(r"\bepochs: \d+", "epochs: -3", text, count=1))
    with pytest.raises(ConfigError, match=re.escape(f"{p}: Global.epochs: must be >= 1, got -3")):
        load_config(str(p))


def test_exponent_without_a_dot_reads_as_a_float_in_files_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text((ROOT / "configs" / "multimodal" / "jsonl_small.yaml").read_text().replace("lr: 0.002", "lr: 2e-3"))
    assert load_config(str(p))["Optimizer"]["lr"] == 0.002
    assert load_config(CFG, ["Optimizer.lr=2e-3"])["Optimizer"]["lr"] == 0.002
    assert load_config(CFG, ["Data.root=1e3data"])["Data"]["root"] == "1e3data"  # not a number: stays a string


def test_resume_drops_the_log_rows_after_the_checkpoint(tmp_path):
    root, recs = tree(tmp_path)
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:3])
    out = tmp_path / "out"
    fit(root, out, "Global.log_every_steps=1")  # 3 steps; checkpoints/last at step 3
    with open(out / "metrics.jsonl", "a") as f:  # what an interrupted second epoch had logged after it
        for step in (4, 5):
            f.write(json.dumps({"type": "train", "step": step, "epoch": 1, "loss": 1.0}) + "\n")
        f.write('{"type": "train", "st')  # a line cut by the kill
    fit(root, out, "Global.log_every_steps=1", "Global.epochs=2", "Global.resume=true")
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train_steps = [r["step"] for r in rows if r["type"] == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6], train_steps
    assert all(r.get("loss") != 1.0 for r in rows)  # the stale rows are gone, not kept beside the new ones


@pytest.mark.parametrize("damage", ["empty folder", "truncated weights", "another family's checkpoint"])
def test_checkpoint_errors_end_in_one_error_line(tmp_path, damage):
    root, recs = tree(tmp_path)
    write_jsonl(root / "val.jsonl", recs)
    ck = tmp_path / "ck"
    ck.mkdir()
    if damage == "truncated weights":
        (ck / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
        target = ck / "model.safetensors"
    elif damage == "another family's checkpoint":
        from safetensors.numpy import save_file

        save_file({"embedding.weight": np.zeros((4, 2), "float32")}, str(ck / "model.safetensors"))
        target = ck / "model.safetensors"
    else:
        target = ck
    tok = tmp_path / "tok"
    from paddle_models.multimodal.tokenizer import train_tokenizer

    train_tokenizer([r["text"] for r in recs], str(tok), vocab_size=60)
    res = tool(EVAL, "-c", CFG, "-o", f"Data.root={root}", "-o", f"Data.tokenizer={tok}",
               "-o", f"Global.output_dir={tmp_path / 'o'}", "-o", f"Global.checkpoint={target}",
               "-o", "Global.progress=false")
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(ck) in last, last


def test_debug_shows_the_stack(tmp_path):
    res = tool(EVAL, "-c", CFG, "-o", f"Global.checkpoint={tmp_path / 'nothing'}", "-o",
               f"Data.root={tmp_path}", "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr, res.stderr[-2000:]
    assert "CheckpointError" in res.stderr or "FileNotFoundError" in res.stderr or "DataError" in res.stderr


def test_infer_checks_its_output_path_before_the_work(tmp_path):
    folder = tmp_path / "pred"
    folder.mkdir()
    res = tool(INFER, "--model-dir", tmp_path / "no_export", "--input", tmp_path / "x.jsonl", "--out", folder)
    assert res.returncode == 2
    assert re.search(r"error: --out .*pred: .*pred is a folder", res.stderr), res.stderr[-2000:]
    assert not (tmp_path / "pred.tmp").exists()


def test_chinese_text_beyond_the_vocabulary_size_says_what_to_raise(tmp_path):
    from paddle_models.multimodal.tokenizer import train_tokenizer

    rng = np.random.RandomState(0)
    chars = [chr(0x4E00 + i) for i in range(700)]
    texts = ["".join(rng.choice(chars, 40)) for _ in range(300)]
    with pytest.raises(ValueError, match=r"cannot hold the \d+ distinct characters.*raise "
                                         r"Data.tokenizer_vocab_size to at least \d+"):
        train_tokenizer(texts, str(tmp_path / "tok"), vocab_size=400)


def test_symlink_out_of_the_data_root_is_refused(tmp_path):
    from paddle_models.multimodal.images import DataError
    from paddle_models.multimodal.readers import read_jsonl

    root, recs = tree(tmp_path)
    secret = tmp_path / "outside.png"
    png(secret)
    os.symlink(secret, root / "img" / "link.png")
    os.symlink(root / "img" / "0.png", root / "img" / "inside.png")  # a link that stays inside is fine
    recs[3]["image"], recs[4]["image"] = "img/link.png", "img/inside.png"
    write_jsonl(root / "train.jsonl", recs)
    with pytest.raises(DataError, match=r"line 4 \(id p3\): image: path 'img/link.png' escapes the data root .* "
                                        r"through a symbolic link"):
        read_jsonl(str(root / "train.jsonl"), str(root), ["negative", "neutral", "positive"])
    recs[3]["image"] = "img/3.png"
    write_jsonl(root / "train.jsonl", recs)
    assert len(read_jsonl(str(root / "train.jsonl"), str(root), ["negative", "neutral", "positive"])) == 12


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(tmp_path):
    from paddle_models.multimodal.task import MultimodalTask
    from paddle_models.predictions import write_prediction_rows

    ids = np.array(["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "\tx", "plain"])
    task = MultimodalTask(load_config(CFG, [f"Global.output_dir={tmp_path}"]))
    prob = np.tile(np.array([[0.2, 0.3, 0.5]], "float32"), (len(ids), 1))
    outputs = {"prob": prob, "label": np.zeros(len(ids), "int64"), "id": ids}
    paths = task.write_eval_artifacts(outputs, task.compute_metrics(outputs), str(tmp_path), "val")
    import csv

    for key in ("predictions_csv", "probabilities_csv"):
        col = [row[0] for row in csv.reader(open(paths[key]))][1:]
        assert col == ["'=cmd|' /C calc'!A0", "'+1", "'-2", "'@SUM(A1)", "'\tx", "plain"], col
    rows = [{"id": i, "label": 2, "label_name": "positive",
             "probabilities": {"negative": 0.2, "neutral": 0.3, "positive": 0.5}} for i in ids]
    csv_path, jsonl_path = write_prediction_rows(str(tmp_path / "pred.csv"), rows, ["negative", "neutral", "positive"])
    assert [row[0] for row in csv.reader(open(csv_path))][1] == "'=cmd|' /C calc'!A0"
    assert json.loads(open(jsonl_path).readline())["id"] == "=cmd|' /C calc'!A0"  # JSON lines stay raw


def test_utf8_bom_is_accepted(tmp_path):
    from paddle_models.multimodal.readers import read_jsonl
    from paddle_models.rec.readers import read_table

    root, recs = tree(tmp_path)
    write_jsonl(root / "train.jsonl", recs)
    (root / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + (root / "train.jsonl").read_bytes())
    assert [r.id for r in read_jsonl(str(root / "train.jsonl"), str(root), ["negative", "neutral", "positive"])][:2] \
        == ["p0", "p1"]
    libfm = tmp_path / "f.libfm"
    libfm.write_bytes(b"\xef\xbb\xbf1 0:1 5:1\n-1 1:1 6:1\n")
    assert read_table("libfm", str(libfm), {}).label.tolist() == [1.0, 0.0]


def test_no_rows_read_names_the_file(tmp_path):
    from paddle_models.rec.features import FeatureError
    from paddle_models.rec.readers import read_table

    empty = tmp_path / "empty.libfm"
    empty.write_text("\n")
    with pytest.raises(FeatureError, match=re.escape(f"{empty}: no rows read")):
        read_table("libfm", str(empty), {})


def test_data_warnings(tmp_path, caplog):
    from paddle_models.multimodal.dataset import build_dataset

    root, recs = tree(tmp_path)
    for r in recs:
        r["label"] = "positive"
    write_jsonl(root / "train.jsonl", recs)
    write_jsonl(root / "val.jsonl", recs[:3])
    cfg = load_config(CFG, [f"Data.root={root}"])
    task = get_task("multimodal")(cfg)
    with caplog.at_level(logging.WARNING):
        task.dataset("train")
        task.dataset("val")
    assert "every training item has the label 'positive'" in caplog.text
    assert "no validation item has the label(s) 'negative', 'neutral'" in caplog.text
    assert "share 3 ids (first: 'p0')" in caplog.text
    caplog.clear()
    for r in recs[:8]:
        r["image"] = "img/missing.png"
    write_jsonl(root / "train.jsonl", recs)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(load_config(CFG, [f"Data.root={root}", "Data.on_bad_image=skip"])["Data"], "train")
    assert len(ds) == 4
    assert "only 4 of 12 items are left after skipping bad post images" in caplog.text
