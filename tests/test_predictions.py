"""The one predictions writer (paddle_models/predictions.py): infer's CSV + JSON lines, the classifier's and the
recommender's eval CSVs, each compared with the file written independently with the csv module."""
import csv
import io
import json

import numpy as np
import pytest

from paddle_models.predictions import (
    csv_and_jsonl_paths,
    probability_cell,
    write_class_probabilities,
    write_csv,
    write_prediction_rows,
)

NAMES = ["negative", "neutral", "positive"]


def _expected(header, rows):
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def test_paths_beside_each_other():
    assert csv_and_jsonl_paths("out/pred.csv") == ("out/pred.csv", "out/pred.jsonl")
    assert csv_and_jsonl_paths("out/pred.JSONL") == ("out/pred.csv", "out/pred.JSONL")
    assert csv_and_jsonl_paths("out/pred") == ("out/pred", "out/pred.jsonl")


def test_infer_rows_csv_and_jsonl(tmp_path):
    rows = [{"id": "a", "label": 2, "label_name": "positive",
             "probabilities": {"negative": 0.1, "neutral": 0.2, "positive": 0.7}},
            {"id": "b", "label": 0, "label_name": "negative",
             "probabilities": {"positive": 1 / 3, "negative": 0.5, "neutral": 1 / 6}}]
    csv_path, jsonl_path = write_prediction_rows(str(tmp_path / "sub" / "pred.csv"), rows, NAMES,
                                                 np.array([2, -1]))
    assert _read(csv_path) == _expected(["id", "label", "p_negative", "p_neutral", "p_positive"],
                                        [["a", 2, "0.100000", "0.200000", "0.700000"],
                                         ["b", 0, "0.500000", "0.166667", "0.333333"]])
    lines = [json.loads(line) for line in _read(jsonl_path).splitlines()]
    assert lines == [{**rows[0], "true_label": 2}, rows[1]]  # an unknown label (-1) adds nothing
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pred.csv", "pred.jsonl"]  # no temporary left


@pytest.mark.parametrize("with_name", [False, True])
def test_class_probabilities(tmp_path, with_name):
    prob = np.array([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]], "float32")
    ids = np.array(["x1", "=x2"])
    path = write_class_probabilities(str(tmp_path / "p.csv"), ids, prob.argmax(1), prob, NAMES,
                                     label_name_column=with_name)
    header = ["id", "label"] + (["label_name"] if with_name else []) + [f"p_{n}" for n in NAMES]
    rows = [["x1", 2] + (["positive"] if with_name else []) + ["0.200000", "0.300000", "0.500000"],
            ["'=x2", 0] + (["negative"] if with_name else []) + ["0.900000", "0.050000", "0.050000"]]
    assert _read(path) == _expected(header, rows)


def test_class_probabilities_refuse_columns_of_different_lengths(tmp_path):
    with pytest.raises(ValueError):
        write_class_probabilities(str(tmp_path / "p.csv"), ["a", "b"], [0], np.ones((2, 3)) / 3, NAMES)


def test_generic_csv_as_the_recommender_writes_it(tmp_path):
    path = write_csv(str(tmp_path / "predictions.csv"), ["row", "label", "prob"],
                     [[i, y, probability_cell(p)] for i, (y, p) in enumerate([(1, 0.25), (0, 1e-7)])])
    assert _read(path) == _expected(["row", "label", "prob"], [[0, 1, "0.250000"], [1, 0, "0.000000"]])


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("old\n")

    def rows():
        yield [1, 2]
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        write_csv(str(path), ["a", "b"], rows())
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]
