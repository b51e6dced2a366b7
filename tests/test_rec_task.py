"""The rec task with the shared Trainer: train with early stopping on AUC, evaluate a checkpoint on another
file (Data.test_path) from a fresh process-like setup, GAUC, DSSM retrieval metrics vs brute force."""
import json
import os

import numpy as np
import paddle
import pytest

from paddle_models.config import _merge, load_config
from paddle_models.engine.checkpoint import load_model_weights
from paddle_models.engine.trainer import Trainer
from paddle_models.metrics import auc, gauc
from paddle_models.registry import get_task, model_entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gen_libfm(path, n, seed):
    """3 fields (user, item, context); clicks depend on user and item biases and a user x item interaction."""
    rng = np.random.RandomState(seed)
    u, i, c = rng.randint(0, 30, n), rng.randint(30, 70, n), rng.randint(70, 74, n)
    bias = np.random.RandomState(100).randn(74)  # the same biases in every generated file
    logit = 1.5 * bias[u] + 1.5 * bias[i] + np.where((u + i) % 3 == 0, 2.0, -1.5) + 0.3 * (c - 71.5)
    y = np.where(rng.rand(n) < 1 / (1 + np.exp(-logit)), 1, -1)
    with open(path, "w") as f:
        for row in zip(y, u, i, c, strict=True):
            f.write("{:d} {:d}:1 {:d}:1 {:d}:1\n".format(*row))
    return str(path)


def libfm_cfg(tmp_path, name="deepfm", **over):
    sizes = {"embedding_dim": 8, "hidden_units": [32, 32]}
    arch = {"name": name, **{k: v for k, v in sizes.items() if k in model_entry(name)["arch_keys"]}}
    data = {"Arch": arch,
            "Data": {"format": "libfm", "path": gen_libfm(tmp_path / "train.libfm", 4000, 0),
                     "field_names": ["user", "item", "ctx"]},
            "Global": {"epochs": 6, "batch_size": 256, "eval_batch_size": 512, "early_stopping_patience": 2,
                       "output_dir": str(tmp_path / "run"), "progress": False, "num_threads": 1},
            "Optimizer": {"name": "Adam", "lr": 0.01},
            "Metric": {"user_field": "user"}}
    return load_config(data=_merge(data, over))


def test_train_then_eval_checkpoint_on_another_file(tmp_path):
    cfg = libfm_cfg(tmp_path)
    task = get_task("rec")(cfg)
    assert (task.best_metric, task.best_mode) == ("auc", "max")
    res = Trainer(cfg, task).fit()
    assert res["auc"] > 0.8 and 0 < res["logloss"] < 0.6 and "gauc" in res
    assert os.path.isfile(res["best_checkpoint"])
    assert os.path.isfile(os.path.join(res["output_dir"], "feature_map.json"))
    # the val metrics are what the metrics module computes on the model's predictions
    outs = Trainer(cfg, task).predict(Trainer(cfg, task).task.build_model(), "val")  # fresh weights: any model
    assert set(outs) == {"prob", "label", "group"}

    # eval of the best checkpoint on another file, in a fresh config with another output dir: the feature map
    # comes from beside the checkpoint, split "test" reads Data.test_path
    other = gen_libfm(tmp_path / "other.libfm", 1500, 1)
    cfg2 = libfm_cfg(tmp_path, Global={"checkpoint": res["best_checkpoint"], "output_dir": str(tmp_path / "ev")},
                     Data={"test_path": other})
    cfg2["Data"]["path"] = "/nonexistent/never_read.libfm"  # the training file is not needed to evaluate
    task2 = get_task("rec")(cfg2)
    m = Trainer(cfg2, task2).evaluate("test")
    assert m["samples"] == 1500 and m["auc"] > 0.8
    # the same numbers from the raw predictions, by the metrics module and by hand
    model = task2.build_model()
    load_model_weights(model, res["best_checkpoint"])
    model.eval()
    ds = task2.dataset("test")
    b = ds.batch(list(range(len(ds))))
    p = model(paddle.to_tensor(b["ids"])).numpy()
    y = b["label"]
    assert m["auc"] == pytest.approx(auc(y, p), abs=1e-6)
    assert m["logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-5)
    raw_users = np.array([int(line.split()[1].split(":")[0]) for line in open(other)])
    assert m["gauc"] == pytest.approx(gauc(raw_users, y, p), abs=1e-6)
    assert os.path.isfile(m["predictions"])


def test_every_ctr_model_beats_chance_through_the_trainer(tmp_path):
    """A short run of each CTR model on generated data, early stopping on validation AUC."""
    names = [n for n in ("lr", "fm", "ffm", "deepfm", "deepffm", "widedeep", "xdeepfm", "dcn", "dcnv2")]
    path = gen_libfm(tmp_path / "d.libfm", 3000, 3)
    for name in names:
        over = {"Global": {"epochs": 3, "output_dir": str(tmp_path / name)}, "Data": {"path": path}}
        if name == "widedeep":
            over["Data"]["crosses"] = [["user", "item"]]
            over["Optimizer"] = {"name": "Adagrad", "lr": 0.05, "wide": {"lr": 0.5}}
        if name in ("lr", "fm", "ffm"):
            over["Optimizer"] = {"lr": 0.05}
        cfg = libfm_cfg(tmp_path, name, **over)
        res = Trainer(cfg, get_task("rec")(cfg)).fit()
        floor = 0.6 if name == "lr" else 0.75  # LR cannot represent the user x item interaction
        assert res["auc"] > floor, f"{name}: val AUC {res['auc']:.3f}"


def test_dssm_retrieval_trains_and_metrics_match_brute_force(tmp_path):
    data = _merge(model_entry("dssm")["small_config"],
                  {"Arch": {"name": "dssm"}, "Data": {"num_negatives": 8},
                   "Global": {"epochs": 8, "output_dir": str(tmp_path / "run"), "progress": False,
                              "batch_size": 32, "num_threads": 1},
                   "Optimizer": {"name": "Adam", "lr": 0.01}, "Metric": {"topk": [5, 10]}})
    cfg = load_config(data=data)
    task = get_task("rec")(cfg)
    assert task.best_metric == "recall@5"
    tr = Trainer(cfg, task)
    res = tr.fit()
    for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert k in res
    # synthetic users only interact with items of their cluster (10 of the 40 items; 8 of them seen in
    # training and excluded): 5 random picks among the 32 unseen items hit 16% of the time
    assert res["recall@5"] > 0.6
    # metrics vs a brute-force ranking of every item for every user
    model = tr.model
    model.eval()
    ds = task.dataset("val")
    b = ds.batch(list(range(len(ds))))
    u = model.user_tower(paddle.to_tensor(b["user_ids"])).numpy()
    v = model.item_tower(paddle.to_tensor(task.data.catalog_ids)).numpy()
    scores = u @ v.T
    hits5, ndcg10 = [], []
    for r in range(len(scores)):
        s = scores[r].copy()
        s[b["exclude"][r][b["exclude"][r] >= 0]] = -np.inf
        rank = int((s > s[b["target"][r]]).sum())
        hits5.append(rank < 5)
        ndcg10.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    m = tr.evaluate("val", model=model, write_artifacts=False)
    assert m["recall@5"] == pytest.approx(np.mean(hits5), abs=1e-9)
    assert m["ndcg@10"] == pytest.approx(np.mean(ndcg10), abs=1e-6)


def test_in_batch_softmax_masks_duplicate_positives(tmp_path):
    """A batch where two rows share an item: the other row's copy is not a negative."""
    data = _merge(model_entry("dssm")["small_config"], {"Arch": {"name": "dssm"}})
    task = get_task("rec")(load_config(data=data))
    task.prepare(str(tmp_path))
    model = task.build_model()
    ds = task.dataset("train")
    idx = ds.arrays["item_index"]
    first = int(np.flatnonzero(idx == idx[0])[1])  # another row with the same item
    rows = [0, first, 2, 3] if idx[2] != idx[0] and idx[3] != idx[0] else [0, first]
    b = {k: paddle.to_tensor(v) for k, v in ds.batch(rows).items()}
    loss, _ = task.forward_loss(model, b)
    logits = model(b["user_ids"], b["item_ids"], all_pairs=True).numpy()
    want = []
    for r in range(len(rows)):
        keep = [c for c in range(len(rows)) if c == r or idx[rows[c]] != idx[rows[r]]]
        z = logits[r, keep]
        want.append(np.log(np.exp(z - z.max()).sum()) + z.max() - logits[r, r])
    assert float(loss) == pytest.approx(np.mean(want), rel=1e-5)


def test_configs_load_and_name_their_models():
    import glob

    paths = sorted(glob.glob(os.path.join(REPO, "configs", "rec", "*.yaml")))
    names = {os.path.basename(p) for p in paths}
    for m in ("lr", "fm", "ffm", "deepfm", "deepffm", "widedeep", "xdeepfm", "dcn", "dcnv2"):
        assert f"{m}_frappe.yaml" in names
    assert "dssm_ml100k.yaml" in names and "deepfm_criteo.yaml" in names
    for p in paths:
        cfg = load_config(p)
        assert cfg["_family"] == "rec"
        if p.endswith("_frappe.yaml"):
            d = cfg["Data"]
            assert d["format"] == "libfm" and d["split"] == [0.9, 0.1] and d["split_seed"] == 2026
            assert d["path"].endswith("frappe/frappe.validation.libfm")
            assert cfg["Arch"]["embedding_dim"] == 10 and cfg["Global"]["early_stopping_patience"] == 2


def test_reduce_on_plateau_in_a_trainer_run(tmp_path):
    """After every validation run without a new best AUC the learning rate drops x0.1 (FuxiCTR's schedule)."""
    cfg = libfm_cfg(tmp_path, Global={"epochs": 8, "early_stopping_patience": 3, "log_every_steps": 1},
                    Optimizer={"lr": 0.05, "reduce_on_plateau": 0.1})
    Trainer(cfg, get_task("rec")(cfg)).fit()
    recs = [json.loads(line) for line in open(os.path.join(cfg["Global"]["output_dir"], "metrics.jsonl"))]
    evals = [r for r in recs if r["type"] == "eval"]
    lr, best, n_drops = 0.05, -1.0, 0
    for e in evals:
        if e["auc"] > best:
            best = e["auc"]
            assert "lr_reduced_to" not in e
        else:
            lr *= 0.1
            n_drops += 1
            assert e["lr_reduced_to"] == pytest.approx(lr)
        later = [r for r in recs if r["type"] == "train" and r["step"] > e["step"]]
        if later:
            assert later[0]["lr"] == pytest.approx(lr)
    assert n_drops >= 1, "the run never stalled: raise the learning rate of this test"


def test_eval_defaults_to_test_when_a_test_file_is_given(tmp_path):
    cfg = libfm_cfg(tmp_path)
    assert get_task("rec")(cfg).default_eval_split() == "val"
    cfg = libfm_cfg(tmp_path, Data={"test_path": str(tmp_path / "x.libfm")})
    assert get_task("rec")(cfg).default_eval_split() == "test"
