"""Rec evaluation files that differ from the training data: categories never seen in training are
encoded as each feature's out-of-vocabulary id (documented in rec/features.py) and evaluated; a literal
NaN in a numeric column and a column the feature map needs but the file lacks are errors naming the
file, the line (for NaN) and the field, never a traceback or a silently dropped row."""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT

from paddle_models.config import load_config
from paddle_models.engine.trainer import Trainer
from paddle_models.rec.features import FeatureError
from paddle_models.registry import get_task

HEADER = "label,I1,C1,C2"


def write_csv(path, rows) -> str:
    path.write_text("\n".join([HEADER, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return str(path)


def config_data(train: str, output_dir, **global_cfg) -> dict:
    return {"Arch": {"name": "lr"}, "Data": {"format": "criteo", "path": train, "val_path": train},
            "Global": {"epochs": 1, "batch_size": 64, "output_dir": str(output_dir), "progress": False,
                       "num_threads": 1, **global_cfg},
            "Optimizer": {"name": "Adam", "lr": 0.01}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A logistic regression trained one epoch on 200 rows of users u0..u4 and items i0..i5."""
    root = tmp_path_factory.mktemp("rec_eval")
    rng = np.random.RandomState(0)
    rows = [(int(rng.rand() < 0.5), rng.randint(0, 9), f"u{rng.randint(5)}", f"i{rng.randint(6)}")
            for _ in range(200)]
    train = write_csv(root / "train.csv", rows)
    cfg = load_config(data=config_data(train, root / "run"))
    result = Trainer(cfg, get_task("rec")(cfg)).fit()
    return {"root": root, "train": train, "checkpoint": result["best_checkpoint"]}


def eval_trainer(trained, test_file: str, name: str) -> Trainer:
    data = config_data(trained["train"], trained["root"] / f"eval_{name}", checkpoint=trained["checkpoint"])
    data["Data"]["test_path"] = test_file
    cfg = load_config(data=data)
    return Trainer(cfg, get_task("rec")(cfg))


def test_unseen_categories_at_eval_are_out_of_vocabulary(trained):
    """Rows 0 and 1 differ only in categories the training rows never had: both encode as the OOV ids
    and get the same probability; every row is evaluated and written."""
    rows = [(1, 3, "never_user", "never_item"), (0, 3, "other_user", "other_item"), (1, 3, "u1", "i2"),
            (0, "", "u2", "never_item")]
    test_file = write_csv(trained["root"] / "unseen.csv", rows)
    trainer = eval_trainer(trained, test_file, "unseen")
    metrics = trainer.evaluate("test")
    assert metrics["samples"] == len(rows) and np.isfinite(metrics["logloss"])
    fmap = trainer.task.data.fmap
    ids = trainer.task.data.dataset("test").arrays["ids"]
    offsets = [fmap.by_name[name].offset for name in ("C1", "C2")]
    assert ids[0].tolist() == ids[1].tolist() == offsets  # local id 0 of each feature: out of vocabulary
    assert ids[2, 0] > offsets[0] and ids[2, 1] > offsets[1] and ids[3, 1] == offsets[1]
    with open(metrics["predictions"]) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 + len(rows)
    prob = [float(line.split(",")[2]) for line in lines[1:]]
    assert prob[0] == prob[1] and prob[0] != prob[2]


def test_nan_in_a_numeric_column_at_eval_names_file_line_and_field(trained):
    test_file = write_csv(trained["root"] / "nan.csv", [(1, 3, "u1", "i1"), (0, "nan", "u1", "i2")])
    with pytest.raises(FeatureError) as error:
        eval_trainer(trained, test_file, "nan").evaluate("test")
    assert str(error.value).startswith(f"{test_file}: line 3: field 'I1': 'nan' is not a finite number")


def test_a_label_that_is_nan_at_eval_is_refused(trained):
    test_file = write_csv(trained["root"] / "nan_label.csv", [(1, 3, "u1", "i1"), ("nan", 2, "u1", "i2")])
    with pytest.raises(FeatureError) as error:
        eval_trainer(trained, test_file, "nan_label").evaluate("test")
    assert str(error.value).startswith(f"{test_file}: line 3: field 'label': label 'nan' is outside the label set")


def test_a_missing_column_at_eval_names_the_file_and_the_feature(trained):
    test_file = trained["root"] / "missing.csv"
    test_file.write_text("label,I1,C1\n1,3,u1\n")
    with pytest.raises(FeatureError) as error:
        eval_trainer(trained, str(test_file), "missing").evaluate("test")
    assert str(error.value) == f"{test_file}: feature 'C2': column 'C2' not found (columns: I1, C1)"


def test_eval_tool_reports_a_missing_column_in_one_line(trained):
    """The same file through tools/eval.py: one ``error:`` line, exit code 2, no traceback."""
    test_file = trained["root"] / "missing.csv"
    test_file.write_text("label,I1,C1\n1,3,u1\n")
    config = trained["root"] / "eval.yaml"
    config.write_text(yaml.safe_dump(config_data(trained["train"], trained["root"] / "eval_tool")))
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), "-c", str(config), "--split", "test",
                          "-o", f"Global.checkpoint={trained['checkpoint']}", "-o", f"Data.test_path={test_file}"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2"))
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert f"error: {test_file}: feature 'C2': column 'C2' not found" in res.stderr, res.stderr[-3000:]
    assert not (trained["root"] / "eval_tool" / "eval_test" / "predictions.csv").exists()
