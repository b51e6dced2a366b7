"""Hand-written numpy metrics shared by every family.

Classification: :func:`accuracy`, :func:`confusion_matrix`, :func:`precision_recall_f1`,
:func:`classification_report` (per-class precision / recall / F1, macro-F1).
Binary scoring / CTR: :func:`auc` (rank based, ties get their average rank, i.e. the
Mann-Whitney U statistic), :func:`logloss` (probabilities clipped), :func:`gauc` (per-user AUC
weighted by the user's number of samples; users whose samples are all of one class are skipped).
Ranking / retrieval: :func:`recall_at_k`, :func:`ndcg_at_k` from a score matrix
``[n_users, n_items]`` (optionally with a mask of already-seen items to exclude) or from ranked lists,
plus the held-out true item(s) of each user.

All functions take array-likes and return Python floats (or dicts / numpy arrays where noted).
They have no dependency on paddle so they can be used anywhere (tests compare them with
scikit-learn).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "classification_report",
    "format_confusion_matrix",
    "auc",
    "logloss",
    "gauc",
    "top_k_items",
    "recall_at_k",
    "ndcg_at_k",
]


# ----------------------------------------------------------------------------- helpers
def _as_1d(x, name: str, dtype=None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _check_same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{na} has {a.shape[0]} entries but {nb} has {b.shape[0]}")


def _labels_int(y, name: str) -> np.ndarray:
    arr = _as_1d(y, name)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        elif arr.dtype == bool:
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name}: class labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- classification
def accuracy(y_true, y_pred) -> float:
    """Fraction of exact matches. ``y_pred`` may also be logits/probabilities ``[N, C]`` (argmax)."""
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] > 1:
        y_pred = y_pred.argmax(axis=1)
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    _check_same_length(t, p, "y_true", "y_pred")
    if t.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as class ``j`` (int64)."""
    t = _labels_int(y_true, "y_true")
    p = _labels_int(y_pred, "y_pred")
    _check_same_length(t, p, "y_true", "y_pred")
    if num_classes is None:
        num_classes = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    for arr, name in ((t, "y_true"), (p, "y_pred")):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name}[{i}] = {int(arr[i])} is outside the classes 0..{num_classes - 1}")
    flat = t * num_classes + p
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None):
    """Per-class ``(precision, recall, f1, support)`` arrays.

    A class with no prediction has precision 0, a class with no sample recall 0 and F1 is 0 when
    precision + recall is 0 (scikit-learn's ``zero_division=0``).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    pred_count = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, pred_count)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support.astype(np.int64)


def classification_report(y_true, y_pred, num_classes: int | None = None,
                          label_names: Sequence[str] | None = None) -> dict:
    """Accuracy, macro / weighted averages, per-class metrics and the confusion matrix.

    Returns a dict with ``accuracy``, ``macro_precision``, ``macro_recall``, ``macro_f1``,
    ``weighted_f1``, ``num_samples``, ``per_class`` (a list of dicts with ``label``, ``precision``,
    ``recall``, ``f1``, ``support``) and ``confusion_matrix`` (nested lists). Macro averages are
    over all ``num_classes`` classes, present or not (as scikit-learn with ``labels=range(C)``).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    c = cm.shape[0]
    if label_names is not None and len(label_names) != c:
        raise ValueError(f"label_names has {len(label_names)} names for {c} classes")
    names = list(label_names) if label_names is not None else [str(i) for i in range(c)]
    precision, recall, f1, support = precision_recall_f1(y_true, y_pred, c)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("classification_report of an empty set is undefined")
    per_class = [
        {"label": names[i], "precision": float(precision[i]), "recall": float(recall[i]),
         "f1": float(f1[i]), "support": int(support[i])}
        for i in range(c)
    ]
    return {
        "accuracy": float(np.trace(cm) / n),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / n),
        "num_samples": n,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def format_confusion_matrix(cm, label_names: Sequence[str] | None = None) -> str:
    """A plain-text table of a confusion matrix (rows: true class, columns: predicted)."""
    cm = np.asarray(cm)
    c = cm.shape[0]
    names = list(label_names) if label_names is not None else [str(i) for i in range(c)]
    width = max([len("true\\pred")] + [len(n) for n in names] + [len(str(int(v))) for v in cm.ravel()])
    lines = ["true\\pred".ljust(width) + " " + " ".join(n.rjust(width) for n in names)]
    for i in range(c):
        lines.append(names[i].ljust(width) + " " + " ".join(str(int(v)).rjust(width) for v in cm[i]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- binary scores
def _rankdata_average(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values get the average of their ranks (scipy's ``method='average'``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # starts of runs of equal values
    boundaries = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    starts, ends = boundaries[:-1], boundaries[1:]  # run covers sorted positions [start, end)
    avg = (starts + ends + 1) / 2.0                   # mean of 1-based ranks start+1 .. end
    sorted_ranks = np.repeat(avg, ends - starts)
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = sorted_ranks
    return ranks


def _binary_labels(y_true, name="y_true") -> np.ndarray:
    t = _as_1d(y_true, name)
    if t.dtype == bool:
        return t.astype(np.int64)
    t = t.astype(np.float64)
    bad = (t != 0) & (t != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {t[i]!r}: binary labels must be 0 or 1")
    return t.astype(np.int64)


def auc(y_true, y_score) -> float:
    """Area under the ROC curve from labels in {0, 1} and scores (higher = more positive).

    Rank based (Mann-Whitney U): ties between a positive and a negative count one half.
    Raises ``ValueError`` when only one class is present (AUC undefined).
    """
    t = _binary_labels(y_true)
    s = _as_1d(y_score, "y_score", dtype=np.float64)
    _check_same_length(t, s, "y_true", "y_score")
    if np.isnan(s).any():
        raise ValueError("y_score contains NaN")
    n_pos = int(t.sum())
    n_neg = int(t.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined when only one class is present in y_true")
    ranks = _rankdata_average(s)
    u = ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def logloss(y_true, y_prob, eps: float = 1e-7) -> float:
    """Mean binary cross entropy; probabilities are clipped to ``[eps, 1 - eps]``."""
    t = _binary_labels(y_true)
    p = _as_1d(y_prob, "y_prob", dtype=np.float64)
    _check_same_length(t, p, "y_true", "y_prob")
    if t.size == 0:
        raise ValueError("logloss of an empty set is undefined")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)))


def gauc(user_ids, y_true, y_score, return_details: bool = False):
    """Group AUC: per-user AUC weighted by each user's number of samples.

    Users whose samples all have the same label are skipped (their AUC is undefined).
    Raises ``ValueError`` when no user has both classes. With ``return_details=True`` returns
    ``(gauc, n_users_used, n_users_skipped)``.
    """
    u = _as_1d(user_ids, "user_ids")
    t = _binary_labels(y_true)
    s = _as_1d(y_score, "y_score", dtype=np.float64)
    _check_same_length(u, t, "user_ids", "y_true")
    _check_same_length(t, s, "y_true", "y_score")
    _, inverse = np.unique(u, return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    inv_sorted = inverse[order]
    bounds = np.flatnonzero(np.r_[True, inv_sorted[1:] != inv_sorted[:-1], True])
    total_w, total, used, skipped = 0.0, 0.0, 0, 0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = order[a:b]
        tt = t[idx]
        pos = int(tt.sum())
        if pos == 0 or pos == tt.shape[0]:
            skipped += 1
            continue
        w = float(tt.shape[0])
        total += w * auc(tt, s[idx])
        total_w += w
        used += 1
    if used == 0:
        raise ValueError("GAUC is undefined: no user has both positive and negative samples")
    value = float(total / total_w)
    if return_details:
        return value, used, skipped
    return value


# ----------------------------------------------------------------------------- ranking
TrueItems = Sequence[int] | Sequence[Sequence[int]] | np.ndarray


def _true_sets(true_items, n_users: int) -> list[set]:
    """Normalise held-out items: one int per user, or a list / set of ints per user."""
    if isinstance(true_items, np.ndarray) and true_items.ndim == 1 and \
            np.issubdtype(true_items.dtype, np.integer):
        sets = [{int(v)} for v in true_items]
    elif isinstance(true_items, np.ndarray) and true_items.ndim == 2:
        sets = [set(int(v) for v in row if v >= 0) for row in true_items]  # -1 = padding
    else:
        sets = []
        for v in true_items:
            if isinstance(v, (int, np.integer)):
                sets.append({int(v)})
            else:
                sets.append(set(int(x) for x in v))
    if len(sets) != n_users:
        raise ValueError(f"true_items has {len(sets)} users but the scores/rankings have {n_users}")
    return sets


def top_k_items(scores, k: int, exclude_mask=None) -> np.ndarray:
    """Indices of the ``k`` highest-scoring items per row, best first (``[n_users, k]``).

    ``exclude_mask`` (bool ``[n_users, n_items]``, True = exclude, e.g. items seen in training)
    sets those scores to -inf first. Ties are broken by the lower item index.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores: expected [n_users, n_items], got shape {s.shape}")
    if exclude_mask is not None:
        m = np.asarray(exclude_mask, dtype=bool)
        if m.shape != s.shape:
            raise ValueError(f"exclude_mask shape {m.shape} differs from scores shape {s.shape}")
        s = np.where(m, -np.inf, s)
    n_items = s.shape[1]
    k = int(min(k, n_items))
    if k <= 0:
        raise ValueError("k must be positive")
    # stable: sort by (-score, index)
    if k < n_items:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        # argpartition may cut inside a tie: recover all candidates with score >= kth score
        kth = np.take_along_axis(s, part, axis=1).min(axis=1, keepdims=True)
        out = np.empty((s.shape[0], k), dtype=np.int64)
        for r in range(s.shape[0]):
            cand = np.flatnonzero(s[r] >= kth[r, 0])
            cand = cand[np.lexsort((cand, -s[r, cand]))]
            out[r] = cand[:k]
        return out
    return np.lexsort((np.broadcast_to(np.arange(n_items), s.shape), -s), axis=1)[:, :k].astype(np.int64)


def _rankings(scores_or_ranked, k: int, exclude_mask, ranked: bool) -> np.ndarray:
    if ranked:
        if exclude_mask is not None:
            raise ValueError("exclude_mask applies to scores, not to ranked lists")
        return [list(r)[:k] for r in scores_or_ranked]
    return top_k_items(scores_or_ranked, k, exclude_mask)


def recall_at_k(scores, true_items: TrueItems, k: int, exclude_mask=None, ranked: bool = False,
                reduce: bool = True):
    """Recall@K: per user ``|top-K ∩ true| / |true|``, averaged over users with a true item.

    ``scores``: ``[n_users, n_items]`` scores, or (``ranked=True``) per-user ranked item lists.
    ``true_items``: one held-out item per user or a collection per user.
    ``exclude_mask``: True where an item must not be recommended (already seen).
    With ``reduce=False`` returns the per-user values (NaN for users without true items).
    """
    n_users = len(scores)
    truth = _true_sets(true_items, n_users)
    top = _rankings(scores, k, exclude_mask, ranked)
    vals = np.full(n_users, np.nan)
    for u in range(n_users):
        if not truth[u]:
            continue
        hits = sum(1 for it in top[u] if int(it) in truth[u])
        vals[u] = hits / len(truth[u])
    if not reduce:
        return vals
    if np.all(np.isnan(vals)):
        raise ValueError("recall@K is undefined: no user has a held-out item")
    return float(np.nanmean(vals))


def ndcg_at_k(scores, true_items: TrueItems, k: int, exclude_mask=None, ranked: bool = False,
              reduce: bool = True):
    """NDCG@K with binary relevance: DCG = sum over hits at rank r (1-based) of 1/log2(r+1),
    normalised by the ideal DCG of ``min(|true|, K)`` hits; averaged over users with a true item.
    Same arguments as :func:`recall_at_k`.
    """
    n_users = len(scores)
    truth = _true_sets(true_items, n_users)
    top = _rankings(scores, k, exclude_mask, ranked)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    vals = np.full(n_users, np.nan)
    for u in range(n_users):
        if not truth[u]:
            continue
        dcg = sum(discounts[r] for r, it in enumerate(top[u]) if int(it) in truth[u])
        idcg = discounts[:min(len(truth[u]), k)].sum()
        vals[u] = dcg / idcg
    if not reduce:
        return vals
    if np.all(np.isnan(vals)):
        raise ValueError("NDCG@K is undefined: no user has a held-out item")
    return float(np.nanmean(vals))
