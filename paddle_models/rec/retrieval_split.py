"""Leave-last-out splits for retrieval (DSSM): each user's interactions sorted by time; the last one is the
test item, the one before it the validation item, the rest train. Training rows are (user features +
history of earlier items, item features) pairs; evaluation rows are users, ranked against every item of
the catalogue with their training items excluded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import Table


@dataclass
class _Interactions:
    """The interactions sorted by (user, time); ``order`` maps sorted rows to rows of the ``.inter`` table."""

    order: np.ndarray         # row of the .inter table of every sorted interaction
    user_codes: np.ndarray    # the distinct user ids; ``users`` index into it
    users: np.ndarray         # user of every sorted interaction
    items: np.ndarray         # catalogue index of every sorted interaction's item
    position: np.ndarray      # the interaction's rank among its user's (0: the earliest)
    count: np.ndarray         # its user's number of interactions


def _catalogue(item_table, interaction_items: np.ndarray, inter: Table):
    """(item ids of the catalogue, the catalogue as a Table, each interaction's catalogue index): every item of
    the ``.item`` file, then the items only seen in interactions."""
    ids = item_table.column("item_id").astype(str) if item_table is not None else np.zeros(0, str)
    extra = np.setdiff1d(np.unique(interaction_items), ids)
    ids = np.concatenate([ids, extra]) if len(extra) else ids
    order = np.argsort(ids, kind="stable")
    index = order[np.searchsorted(ids[order], interaction_items)]
    if item_table is None:
        return ids, Table({"item_id": ids}, None, inter.file), index
    columns = {k: (np.concatenate([v, np.full(len(extra), "" if v.dtype.kind == "U" else np.nan, v.dtype)])
                   if len(extra) else v) for k, v in item_table.columns.items()}
    columns["item_id"] = ids
    return ids, Table(columns, None, item_table.file), index


def _sort_by_user_and_time(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> _Interactions:
    """Every user's interactions sorted by time (ties keep file order)."""
    user_codes, user_index = np.unique(users, return_inverse=True)
    order = np.lexsort((np.arange(len(users)), times, user_index))
    sorted_users = user_index[order]
    counts = np.bincount(sorted_users, minlength=len(user_codes))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return _Interactions(order, user_codes, sorted_users, items[order], np.arange(len(order)) - starts[sorted_users],
                         counts[sorted_users])


def _histories(inter: _Interactions, item_ids: np.ndarray, history_len: int) -> np.ndarray:
    """``[n, history_len]``: the item ids of each interaction's ``history_len`` predecessors (the most recent
    last), "" where the user has fewer."""
    width = max(int(history_len), 1)
    back = np.arange(-width, 0)[None, :]
    source = np.arange(len(inter.order))[:, None] + back
    valid = (inter.position[:, None] + back) >= 0
    return np.where(valid, item_ids[inter.items[np.clip(source, 0, None)]], "")


def _user_columns(user_table, user_codes: np.ndarray) -> dict:
    """The ``.user`` table's attributes of each distinct user (joined on user_id; "" / NaN when absent)."""
    if user_table is None:
        return {}
    raw = user_table.column("user_id").astype(str)
    order = np.argsort(raw, kind="stable")
    pos = np.minimum(np.searchsorted(raw[order], user_codes), len(raw) - 1)
    hit = raw[order][pos] == user_codes
    return {k: np.where(hit, v[order][pos], "" if v.dtype.kind == "U" else np.nan)
            for k, v in user_table.columns.items() if k != "user_id"}


def _exclusions(inter: _Interactions, is_train: np.ndarray, users: np.ndarray, also: dict) -> np.ndarray:
    """``[len(users), width]`` catalogue indices not to rank for each evaluated user: its training items (and
    ``also[user]``, the validation item when testing), -1 padded."""
    train_items_of = [[] for _ in range(len(inter.user_codes))]
    for u, item in zip(inter.users[is_train].tolist(), inter.items[is_train].tolist(), strict=True):
        train_items_of[u].append(item)
    excluded = [list(dict.fromkeys(train_items_of[u])) + ([also[u]] if u in also else []) for u in users.tolist()]
    out = np.full((len(excluded), max([len(e) for e in excluded] + [1])), -1, np.int64)
    for row, items in enumerate(excluded):
        out[row, :len(items)] = items
    return out


def prepare_leave_last_out(tables: dict, rating_threshold: float, history_len: int) -> dict:
    """Leave-last-out splits of RecBole tables (see the module docstring); users with fewer than 3
    interactions only train."""
    inter = tables["inter"]
    if rating_threshold > 0 and "rating" in inter.columns:
        inter = inter.take(np.flatnonzero(inter.numeric("rating") >= rating_threshold))
    item_ids, catalog, item_index = _catalogue(tables["item"], inter.column("item_id").astype(str), inter)
    times = inter.numeric("timestamp") if "timestamp" in inter.columns else np.arange(len(inter), dtype=np.float64)
    sorted_inter = _sort_by_user_and_time(inter.column("user_id").astype(str), item_index, times)
    is_test = (sorted_inter.position == sorted_inter.count - 1) & (sorted_inter.count >= 3)
    is_val = (sorted_inter.position == sorted_inter.count - 2) & (sorted_inter.count >= 3)
    is_train = ~(is_test | is_val)
    history = _histories(sorted_inter, item_ids, history_len)
    user_columns = _user_columns(tables["user"], sorted_inter.user_codes)

    def rows_table(mask: np.ndarray, with_item: bool) -> Table:
        sel = np.flatnonzero(mask)
        columns = {"user_id": sorted_inter.user_codes[sorted_inter.users[sel]], "history": history[sel]}
        columns.update({k: v[sorted_inter.users[sel]] for k, v in user_columns.items()})
        if with_item:
            columns.update({k: v[sorted_inter.items[sel]] for k, v in catalog.columns.items()})
        return Table(columns, None, inter.file, inter.lines[sorted_inter.order[sel]])

    out = {"catalog": catalog, "train_table": rows_table(is_train, True),
           "train_item_index": sorted_inter.items[is_train].astype(np.int64),
           "n_users": len(sorted_inter.user_codes)}
    validation_item = dict(zip(sorted_inter.users[is_val].tolist(), sorted_inter.items[is_val].tolist(), strict=True))
    for split, mask in (("val", is_val), ("test", is_test)):
        out[f"{split}_users"] = rows_table(mask, False)
        out[f"{split}_target"] = sorted_inter.items[mask].astype(np.int64)
        out[f"{split}_exclude"] = _exclusions(sorted_inter, is_train, sorted_inter.users[mask],
                                              validation_item if split == "test" else {})
    return out
