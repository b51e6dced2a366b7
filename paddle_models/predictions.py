"""Prediction files: the one writer of the CSV and JSON-lines files that eval and infer leave behind.

Every CSV goes through :class:`paddle_models.safecsv.SafeCsvWriter` (a cell a spreadsheet would run as a
formula gets a leading ``'``) and every file is written atomically (:func:`paddle_models.fileio.atomic_write`);
JSON lines keep the raw values. Probabilities are written with 6 decimals. The formats (users and tests
read these column names):

* ``tools/infer.py``: PRED as CSV ``id, label, p_<class>...`` and the same rows as JSON lines (the task's
  rows, with ``true_label`` when the input had one): :func:`write_prediction_rows`;
* the classifier's eval: ``predictions.csv`` ``id, label`` (the competition's format) with :func:`write_csv`,
  and ``predictions_proba.csv`` ``id, label, label_name, p_<class>...`` with :func:`write_class_probabilities`;
* the recommender's eval: ``predictions.csv`` ``row, label, prob`` (CTR) or ``user_row, target_item,
  top_items`` (retrieval), with :func:`write_csv` and :func:`probability_cell`.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from .fileio import atomic_write
from .safecsv import SafeCsvWriter


def probability_cell(value: float) -> str:
    """A probability as the CSV files hold it: 6 decimals."""
    return f"{value:.6f}"


def _make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``header`` then ``rows`` into the CSV file ``path`` (its folder created when missing); returns ``path``."""
    _make_parent(path)
    with atomic_write(path, newline="") as f:
        writer = SafeCsvWriter(f)
        writer.writerow(list(header))
        writer.writerows(rows)
    return path


def write_jsonl(path: str, rows: Iterable[dict]) -> str:
    """One JSON object a line (non-ASCII text kept as it is) into ``path``; returns ``path``."""
    _make_parent(path)
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def class_probability_header(label_names: Sequence[str], label_name_column: bool = False) -> list:
    """``id, label[, label_name], p_<class>...`` (one probability column per class, in ``label_names`` order)."""
    return ["id", "label"] + (["label_name"] if label_name_column else []) + [f"p_{n}" for n in label_names]


def class_probability_row(item_id, label, probabilities: Iterable[float], label_name=None) -> list:
    """One row of :func:`class_probability_header`: the id, the predicted class (and its name when given),
    then the probabilities."""
    head = [item_id, label] if label_name is None else [item_id, label, label_name]
    return head + [probability_cell(p) for p in probabilities]


def write_class_probabilities(path: str, ids, labels, probabilities, label_names: Sequence[str],
                              label_name_column: bool = False) -> str:
    """A classifier's predictions as CSV: per item its id, predicted class index ``labels[k]`` (with its name
    when ``label_name_column``) and the row ``probabilities[k]`` (one value per class of ``label_names``)."""
    def rows():
        for item_id, label, item_probabilities in zip(ids, labels, probabilities, strict=True):
            label = int(label)
            name = label_names[label] if label_name_column else None
            yield class_probability_row(item_id, label, item_probabilities, name)

    return write_csv(path, class_probability_header(label_names, label_name_column), rows())


def csv_and_jsonl_paths(out: str) -> tuple:
    """(csv path, jsonl path): ``out`` itself and ``out`` with the extension .jsonl (or .csv when ``out`` is
    the .jsonl one)."""
    stem, ext = os.path.splitext(out)
    if ext.lower() == ".jsonl":
        return stem + ".csv", out
    return out, stem + ".jsonl"


def write_prediction_rows(out: str, rows: Sequence[dict], label_names: Sequence[str], true_labels=None) -> tuple:
    """The task's prediction rows (``{"id", "label", "probabilities": {class: p}, ...}``) as the CSV
    ``id, label, p_<class>...`` and as JSON lines (the rows as they are, plus ``true_label`` where
    ``true_labels[k] >= 0``), at :func:`csv_and_jsonl_paths` of ``out``; returns both paths."""
    csv_path, jsonl_path = csv_and_jsonl_paths(out)
    write_csv(csv_path, class_probability_header(label_names),
              (class_probability_row(row["id"], row["label"], [row["probabilities"][n] for n in label_names])
               for row in rows))

    def labelled_rows():
        for k, row in enumerate(rows):
            if true_labels is not None and true_labels[k] >= 0:
                row = {**row, "true_label": int(true_labels[k])}
            yield row

    write_jsonl(jsonl_path, labelled_rows())
    return csv_path, jsonl_path
