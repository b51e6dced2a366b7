"""Generated rec data with a planted signal (``Data.format: synthetic``): CTR rows and RecBole-like tables,
reproducible from ``Data.synthetic.seed``."""
from __future__ import annotations

import numpy as np

from .features import Table


def synthetic_ctr_table(synthetic_cfg: dict) -> Table:
    """Rows with a planted signal (first-order weights + a pairwise interaction of c0 and c1 + numerics)."""
    rng = np.random.RandomState(int(synthetic_cfg["seed"]))
    n, cards = int(synthetic_cfg["rows"]), [int(c) for c in synthetic_cfg["cardinalities"]]
    cols, score = {}, np.zeros(n)
    for j, c in enumerate(cards):
        v = rng.randint(0, c, n)
        cols[f"c{j}"] = v
        score += rng.randn(c)[v]
    if len(cards) >= 2:
        inter = rng.randn(cards[0], cards[1]) * 1.5
        score += inter[cols["c0"], cols["c1"]]
    for k in range(int(synthetic_cfg["numeric"])):
        x = rng.randn(n) * 3 + 1
        cols[f"n{k}"] = x
        score += 0.5 * np.tanh(x)
    L = int(synthetic_cfg["sequence_len"])
    if L > 0:
        lens = rng.randint(0, L + 1, n)
        seq = rng.randint(0, 10, (n, L))
        seq[np.arange(L)[None, :] >= lens[:, None]] = -1
        cols["s0"] = seq
        w = rng.randn(10)
        score += np.where(seq >= 0, w[np.maximum(seq, 0)], 0).sum(1) / np.maximum(lens, 1)
    label = (score > np.median(score)).astype(np.float32)
    return Table(cols, label, "<synthetic>")


def synthetic_recbole(synthetic_cfg: dict) -> dict[str, Table]:
    """Users and items in 4 clusters: every user interacts, in random order, with distinct items of its own
    cluster (as many as ``rows / users`` allows); items carry their cluster as a ``genre`` feature."""
    rng = np.random.RandomState(int(synthetic_cfg["seed"]))
    n_users, n_items = int(synthetic_cfg["cardinalities"][0]), int(synthetic_cfg["cardinalities"][1])
    users, items, ts = [], [], []
    for u in range(n_users):
        pool = np.arange(n_items)[np.arange(n_items) % 4 == u % 4]
        k = max(3, min(len(pool), int(synthetic_cfg["rows"]) // n_users))
        for t, it in enumerate(rng.permutation(pool)[:k]):
            users.append(str(u))
            items.append(str(it))
            ts.append(float(t))
    inter = Table({"user_id": np.asarray(users), "item_id": np.asarray(items), "timestamp": np.asarray(ts)},
                  None, "<synthetic>.inter")
    item = Table({"item_id": np.arange(n_items).astype(str), "genre": (np.arange(n_items) % 4).astype(str)},
                 None, "<synthetic>.item")
    return {"inter": inter, "user": None, "item": item}
