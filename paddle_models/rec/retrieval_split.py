"""Leave-last-out splits for retrieval (DSSM): each user's interactions sorted by time; the last one is the
test item, the one before it the validation item, the rest train. Training rows are (user features +
history of earlier items, item features) pairs; evaluation rows are users, ranked against every item of
the catalogue with their training items excluded."""
from __future__ import annotations

from typing import Dict

import numpy as np

from .features import Table


def prepare_leave_last_out(rb: Dict[str, Table], rating_threshold: float, history_len: int) -> dict:
    """Leave-last-out splits of RecBole tables (see the module docstring); users with fewer than 3
    interactions only train."""
    inter = rb["inter"]
    if rating_threshold > 0 and "rating" in inter.columns:
        inter = inter.take(np.flatnonzero(inter.numeric("rating") >= rating_threshold))
    users = inter.column("user_id").astype(str)
    items = inter.column("item_id").astype(str)
    ts = inter.numeric("timestamp") if "timestamp" in inter.columns else np.arange(len(inter), dtype=np.float64)
    # the catalogue: every item of the .item file, then items only seen in interactions
    item_t = rb.get("item")
    cat_raw = item_t.column("item_id").astype(str) if item_t is not None else np.zeros(0, str)
    extra = np.setdiff1d(np.unique(items), cat_raw)
    cat_raw = np.concatenate([cat_raw, extra]) if len(extra) else cat_raw
    order_cat = np.argsort(cat_raw, kind="stable")
    pos = np.searchsorted(cat_raw[order_cat], items)
    item_idx = order_cat[pos]
    if item_t is not None:
        cat_cols = {k: (np.concatenate([v, np.full(len(extra), "" if v.dtype.kind == "U" else np.nan, v.dtype)])
                        if len(extra) else v) for k, v in item_t.columns.items()}
        cat_cols["item_id"] = cat_raw
        catalog = Table(cat_cols, None, item_t.file)
    else:
        catalog = Table({"item_id": cat_raw}, None, inter.file)
    # sort every user's interactions by time (ties keep file order)
    ucodes, uinv = np.unique(users, return_inverse=True)
    order = np.lexsort((np.arange(len(users)), ts, uinv))
    u_sorted, i_sorted = uinv[order], item_idx[order]
    counts = np.bincount(u_sorted, minlength=len(ucodes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos_in_user = np.arange(len(order)) - starts[u_sorted]
    cnt = counts[u_sorted]
    is_test = (pos_in_user == cnt - 1) & (cnt >= 3)
    is_val = (pos_in_user == cnt - 2) & (cnt >= 3)
    is_train = ~(is_test | is_val)
    # history: the history_len items before each interaction (the most recent last), "" = padding
    L = max(int(history_len), 1)
    back = np.arange(-L, 0)[None, :]
    src = np.arange(len(order))[:, None] + back
    valid = (pos_in_user[:, None] + back) >= 0
    hist = np.where(valid, cat_raw[i_sorted[np.clip(src, 0, None)]], "")
    # user attributes joined on user_id
    user_t = rb.get("user")
    ucols = {}
    if user_t is not None:
        uraw = user_t.column("user_id").astype(str)
        uo = np.argsort(uraw, kind="stable")
        p = np.minimum(np.searchsorted(uraw[uo], ucodes), len(uraw) - 1)
        hit = uraw[uo][p] == ucodes
        for k, v in user_t.columns.items():
            if k == "user_id":
                continue
            col = v[uo][p]
            ucols[k] = np.where(hit, col, "" if v.dtype.kind == "U" else np.nan)
    def rows_table(mask: np.ndarray, with_item: bool) -> Table:
        sel = np.flatnonzero(mask)
        cols = {"user_id": ucodes[u_sorted[sel]], "history": hist[sel]}
        for k, v in ucols.items():
            cols[k] = v[u_sorted[sel]]
        if with_item:
            for k, v in catalog.columns.items():
                cols[k] = v[i_sorted[sel]]
        return Table(cols, None, inter.file, inter.lines[order[sel]])
    out = {"catalog": catalog, "train_table": rows_table(is_train, True),
           "train_item_index": i_sorted[is_train].astype(np.int64), "n_users": len(ucodes)}
    train_items_of = [[] for _ in range(len(ucodes))]
    for u, it in zip(u_sorted[is_train].tolist(), i_sorted[is_train].tolist()):
        train_items_of[u].append(it)
    for split, mask in (("val", is_val), ("test", is_test)):
        sel = np.flatnonzero(mask)
        out[f"{split}_users"] = rows_table(mask, False)
        out[f"{split}_target"] = i_sorted[sel].astype(np.int64)
        ex = [list(dict.fromkeys(train_items_of[u])) for u in u_sorted[sel].tolist()]
        if split == "test":  # the validation item is known when testing
            vitem = dict(zip(u_sorted[is_val].tolist(), i_sorted[is_val].tolist()))
            ex = [e + [vitem[u]] if u in vitem else e for e, u in zip(ex, u_sorted[sel].tolist())]
        width = max([len(e) for e in ex] + [1])
        arr = np.full((len(ex), width), -1, np.int64)
        for r, e in enumerate(ex):
            arr[r, :len(e)] = e
        out[f"{split}_exclude"] = arr
    return out
