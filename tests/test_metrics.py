"""paddle_models.metrics against scikit-learn and brute-force references; plots write PNGs."""
import itertools
import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from paddle_models import metrics as M
from paddle_models import plots


def _rng(seed=0):
    return np.random.RandomState(seed)


# ----------------------------------------------------------------------------- classification
@pytest.mark.parametrize("seed,num_classes,n", [(0, 3, 200), (1, 5, 57), (2, 2, 31), (3, 4, 9)])
def test_classification_vs_sklearn(seed, num_classes, n):
    r = _rng(seed)
    y = r.randint(0, num_classes, n)
    p = np.where(r.rand(n) < 0.6, y, r.randint(0, num_classes, n))
    labels = list(range(num_classes))
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    np.testing.assert_array_equal(M.confusion_matrix(y, p, num_classes),
                                  skm.confusion_matrix(y, p, labels=labels))
    pr, rc, f1, sup = M.precision_recall_f1(y, p, num_classes)
    spr, src, sf1, ssup = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    np.testing.assert_allclose(pr, spr, atol=1e-12)
    np.testing.assert_allclose(rc, src, atol=1e-12)
    np.testing.assert_allclose(f1, sf1, atol=1e-12)
    np.testing.assert_array_equal(sup, ssup)
    rep = M.classification_report(y, p, num_classes)
    assert rep["macro_f1"] == pytest.approx(
        skm.f1_score(y, p, labels=labels, average="macro", zero_division=0), abs=1e-12)
    assert rep["weighted_f1"] == pytest.approx(
        skm.f1_score(y, p, labels=labels, average="weighted", zero_division=0), abs=1e-12)
    assert rep["macro_precision"] == pytest.approx(
        skm.precision_score(y, p, labels=labels, average="macro", zero_division=0), abs=1e-12)
    assert rep["macro_recall"] == pytest.approx(
        skm.recall_score(y, p, labels=labels, average="macro", zero_division=0), abs=1e-12)
    assert rep["num_samples"] == n
    assert [c["support"] for c in rep["per_class"]] == list(ssup)


def test_classification_absent_class_and_argmax():
    # class 2 never true and never predicted: zero P/R/F1, still counted in the macro average
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0])
    rep = M.classification_report(y, p, 3, label_names=["neg", "neu", "pos"])
    assert rep["per_class"][2] == {"label": "pos", "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                   "support": 0}
    assert rep["macro_f1"] == pytest.approx(
        skm.f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0))
    logits = np.eye(3)[p] * 2.0 - 1.0
    assert M.accuracy(y, logits) == pytest.approx(0.6)
    txt = M.format_confusion_matrix(rep["confusion_matrix"], ["neg", "neu", "pos"])
    assert txt.splitlines()[1].split() == ["neg", "1", "1", "0"]


def test_classification_errors():
    with pytest.raises(ValueError, match=r"y_pred\[1\] = 3 is outside the classes 0..2"):
        M.confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ValueError, match="y_true has 2 entries but y_pred has 3"):
        M.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="label_names has 2 names for 3 classes"):
        M.classification_report([0, 1, 2], [0, 1, 2], 3, label_names=["a", "b"])


# ----------------------------------------------------------------------------- AUC / logloss
@pytest.mark.parametrize("seed", range(4))
def test_auc_vs_sklearn_with_ties(seed):
    r = _rng(seed)
    n = 500
    y = r.randint(0, 2, n)
    continuous = r.rand(n) + 0.3 * y
    tied = np.round(continuous * 4) / 4          # few distinct values: many ties across classes
    for s in (continuous, tied):
        assert M.auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)


def test_auc_brute_force_and_edge_cases():
    r = _rng(7)
    y = r.randint(0, 2, 60)
    s = r.randint(0, 3, 60).astype(float)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)])
    assert M.auc(y, s) == pytest.approx(brute, abs=1e-12)
    assert M.auc([0, 1], [0.5, 0.5]) == 0.5
    assert M.auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    with pytest.raises(ValueError, match="only one class"):
        M.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"y_true\[1\] = 2.0: binary labels must be 0 or 1"):
        M.auc([0, 2], [0.1, 0.2])


def test_logloss_vs_sklearn_and_clipping():
    r = _rng(3)
    y = r.randint(0, 2, 300)
    p = np.clip(r.rand(300) * 0.8 + 0.2 * y, 0.0, 1.0)
    assert M.logloss(y, p) == pytest.approx(skm.log_loss(y, p, labels=[0, 1]), rel=1e-9)
    # extreme probabilities stay finite and equal the clipped value
    v = M.logloss([1, 0], [0.0, 1.0], eps=1e-7)
    assert v == pytest.approx(-math.log(1e-7), rel=1e-9)
    assert math.isfinite(v)


# ----------------------------------------------------------------------------- GAUC
def _gauc_reference(users, y, s):
    num, den = 0.0, 0.0
    for u in sorted(set(users.tolist())):
        m = users == u
        if len(set(y[m].tolist())) < 2:
            continue
        pos, neg = s[m][y[m] == 1], s[m][y[m] == 0]
        a = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
        num += m.sum() * a
        den += m.sum()
    return num / den


def test_gauc_vs_brute_force():
    r = _rng(11)
    n = 400
    users = r.randint(0, 30, n)
    y = r.randint(0, 2, n)
    s = np.round(r.rand(n) + 0.4 * y, 1)
    # make two users single-class so the skip is exercised
    y[users == 0] = 1
    y[users == 1] = 0
    val, used, skipped = M.gauc(users, y, s, return_details=True)
    assert val == pytest.approx(_gauc_reference(users, y, s), abs=1e-12)
    assert skipped >= 2 and used + skipped == len(set(users.tolist()))
    # string user ids work too
    assert M.gauc(np.array([f"u{u}" for u in users]), y, s) == pytest.approx(val, abs=1e-12)
    # a single user equals plain AUC
    assert M.gauc(np.zeros(n), y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(ValueError, match="no user has both"):
        M.gauc([0, 0, 1], [1, 1, 0], [0.1, 0.2, 0.3])


# ----------------------------------------------------------------------------- recall / NDCG
def _brute_rank(scores_row, seen_row):
    items = [i for i in range(len(scores_row)) if not (seen_row is not None and seen_row[i])]
    return sorted(items, key=lambda i: (-scores_row[i], i))


def _brute_recall_ndcg(scores, truth, k, seen=None):
    rec, nd = [], []
    for u in range(scores.shape[0]):
        ranked = _brute_rank(scores[u], None if seen is None else seen[u])[:k]
        t = truth[u]
        hits = [1.0 if it in t else 0.0 for it in ranked]
        rec.append(sum(hits) / len(t))
        dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(t), k)))
        nd.append(dcg / idcg)
    return np.mean(rec), np.mean(nd)


@pytest.mark.parametrize("k", [1, 5, 10, 40])
def test_recall_ndcg_vs_brute_force(k):
    r = _rng(k)
    n_users, n_items = 25, 40
    scores = np.round(r.rand(n_users, n_items), 2)      # some ties
    truth = [set(r.choice(n_items, size=r.randint(1, 4), replace=False).tolist())
             for _ in range(n_users)]
    seen = r.rand(n_users, n_items) < 0.2
    for u, t in enumerate(truth):                        # held-out items are never "seen"
        seen[u, list(t)] = False
    ref_r, ref_n = _brute_recall_ndcg(scores, truth, k)
    assert M.recall_at_k(scores, truth, k) == pytest.approx(ref_r, abs=1e-12)
    assert M.ndcg_at_k(scores, truth, k) == pytest.approx(ref_n, abs=1e-12)
    ref_r, ref_n = _brute_recall_ndcg(scores, truth, k, seen)
    assert M.recall_at_k(scores, truth, k, exclude_mask=seen) == pytest.approx(ref_r, abs=1e-12)
    assert M.ndcg_at_k(scores, truth, k, exclude_mask=seen) == pytest.approx(ref_n, abs=1e-12)


def test_recall_ndcg_single_item_and_ranked_lists():
    scores = np.array([[0.9, 0.1, 0.5, 0.3],
                       [0.2, 0.8, 0.1, 0.7]])
    # user 0 true item 2 is at rank 2, user 1 true item 0 is at rank 3
    assert M.recall_at_k(scores, np.array([2, 0]), 2) == pytest.approx(0.5)
    assert M.ndcg_at_k(scores, np.array([2, 0]), 3) == pytest.approx(
        (1 / math.log2(3) + 1 / math.log2(4)) / 2)
    ranked = M.top_k_items(scores, 4)
    np.testing.assert_array_equal(ranked, [[0, 2, 3, 1], [1, 3, 0, 2]])
    assert M.ndcg_at_k(ranked.tolist(), [2, 0], 3, ranked=True) == pytest.approx(
        M.ndcg_at_k(scores, [2, 0], 3))
    # excluding item 0 for user 0 moves item 2 to rank 1
    seen = np.array([[True, False, False, False], [False, False, False, False]])
    assert M.ndcg_at_k(scores, [2, 0], 1, exclude_mask=seen, reduce=False).tolist() == [1.0, 0.0]
    # 2-D padded truth (-1 = none)
    assert M.recall_at_k(scores, np.array([[2, 3], [1, -1]]), 2) == pytest.approx((0.5 + 1) / 2)
    with pytest.raises(ValueError, match="true_items has 3 users but the scores/rankings have 2"):
        M.recall_at_k(scores, [0, 1, 2], 2)


def test_top_k_tie_break_matches_full_sort():
    r = _rng(5)
    s = r.randint(0, 3, size=(50, 30)).astype(float)
    full = np.array([_brute_rank(row, None) for row in s])
    for k in (1, 3, 7, 30):
        np.testing.assert_array_equal(M.top_k_items(s, k), full[:, :k])


# ----------------------------------------------------------------------------- plots
def test_plots_write_pngs(tmp_path):
    cm = M.confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], 3)
    out = plots.plot_confusion_matrix(cm, str(tmp_path / "cm.png"), ["neg", "neu", "pos"])
    data = open(out, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    log = tmp_path / "metrics.jsonl"
    recs = [{"step": i, "split": "train", "loss": 1.0 / (i + 1), "lr": 1e-3} for i in range(1, 20)]
    recs += [{"step": 10, "type": "val", "loss": 0.3, "macro_f1": 0.7, "confusion_matrix": [[1]]},
             {"step": 19, "type": "val", "loss": 0.2, "macro_f1": 0.8, "samples_per_s": 3.0}]
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    panels = plots.curve_series(plots.read_metrics_log(str(log)))
    assert list(panels) == ["loss", "lr", "macro_f1"]
    assert list(panels["loss"]) == ["train/loss", "val/loss"]
    assert panels["macro_f1"]["val/macro_f1"] == ([10, 19], [0.7, 0.8])
    png = plots.plot_training_curves(str(log), str(tmp_path / "curves.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: invalid JSON"):
        plots.plot_training_curves(str(bad), str(tmp_path / "x.png"))
