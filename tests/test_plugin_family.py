"""A new family plugs in without touching the engine: a toy family defined here (an MLP on generated
tabular data, its own Task and config schema) trains, evaluates, exports and predicts through the real
tools, loaded with PADDLE_MODELS_PLUGINS."""
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = textwrap.dedent('''
    """A toy family: 2-class MLP over rows of a CSV file (id, f0..f{d-1}, label)."""
    import csv
    import os

    import numpy as np
    import paddle
    import paddle.nn.functional as F
    from paddle.static import InputSpec

    from paddle_models import register_model, register_task
    from paddle_models.engine.task import RecordError, Task

    SCHEMA = {
        "Arch": {"name": "toy_mlp", "inputs": 4, "hidden": 32, "num_classes": 2},
        "Data": {"root": "", "label_names": ["neg", "pos"]},
    }


    class MLP(paddle.nn.Layer):
        def __init__(self, inputs, hidden, classes):
            super().__init__()
            self.hidden = paddle.nn.Linear(inputs, hidden)
            self.out = paddle.nn.Linear(hidden, classes)

        def forward(self, x):
            return self.out(F.relu(self.hidden(x)))


    @register_model("toy_mlp", family="toyfam")
    def build_toy_mlp(cfg):
        a = cfg["Arch"]
        return MLP(a["inputs"], a["hidden"], a["num_classes"])


    def read_csv(path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        ids = [r["id"] for r in rows]
        x = np.array([[float(r[k]) for k in r if k.startswith("f")] for r in rows], "float32")
        y = np.array([int(r["label"]) if r.get("label", "") != "" else -1 for r in rows], "int64")
        return ids, x, y


    class Rows(paddle.io.Dataset):
        def __init__(self, ids, x, y):
            self.ids, self.x, self.y = ids, x, y

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"id": self.ids[i], "x": self.x[i], "label": self.y[i]}


    def collate(items):
        return {"x": np.stack([it["x"] for it in items]), "label": np.array([it["label"] for it in items]),
                "id": np.array([it["id"] for it in items])}


    @register_task("toyfam", defaults=SCHEMA)
    class ToyTask(Task):
        family = "toyfam"
        best_metric = "accuracy"
        best_mode = "max"
        eval_on_export = True

        def __init__(self, cfg):
            super().__init__(cfg)
            self.label_names = list(cfg["Data"]["label_names"])

        def dataset(self, split):
            return Rows(*read_csv(os.path.join(self.cfg["Data"]["root"], f"{split}.csv")))

        def collate_fn(self, split):
            return collate

        def forward_loss(self, model, batch):
            return F.cross_entropy(model(batch["x"]), batch["label"]), {}

        def predict_step(self, model, batch):
            prob = F.softmax(model(batch["x"]), axis=-1)
            return {"prob": prob.numpy(), "label": batch["label"].numpy()}

        def compute_metrics(self, outputs):
            return {"accuracy": float((outputs["prob"].argmax(1) == outputs["label"]).mean())}

        def export_input_spec(self, model):
            return [InputSpec([None, self.cfg["Arch"]["inputs"]], "float32", "x")]

        def example_batch(self, model, batch_size=2):
            return {"x": np.random.RandomState(0).randn(batch_size, self.cfg["Arch"]["inputs"]).astype("float32")}

        def read_inputs(self, input_file, **options):
            return Rows(*read_csv(input_file)), collate

        def prepare_inputs(self, records):
            good, errors = [], []
            for i, r in enumerate(records):
                x = r.get("x") if isinstance(r, dict) else None
                if not (isinstance(x, list) and len(x) == self.cfg["Arch"]["inputs"]):
                    errors.append(RecordError(i, (r or {}).get("id") if isinstance(r, dict) else None, "x",
                                              f"expected {self.cfg['Arch']['inputs']} numbers"))
                    continue
                errors.append(None)
                good.append({"id": str(r.get("id", i)), "x": np.array(x, "float32"), "label": -1})
            return (collate(good) if good else None), errors
''')


def _write_split(path, n, seed):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "f0", "f1", "f2", "f3", "label"])
        for i in range(n):
            w.writerow([f"{path.stem}-{i}"] + [f"{v:.6f}" for v in x[i]] + [int(y[i])])
    return y


def _tool(name, args, env):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *args, "--json"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture()
def plugin_env(tmp_path):
    (tmp_path / "toyfam_plugin.py").write_text(PLUGIN, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PADDLE_MODELS_PLUGINS"] = "toyfam_plugin"
    env["GLOG_minloglevel"] = "2"
    return env


def test_toy_family_trains_evaluates_exports_and_predicts(tmp_path, plugin_env):
    data = tmp_path / "data"
    data.mkdir()
    _write_split(data / "train.csv", 600, 0)
    _write_split(data / "val.csv", 200, 1)
    y_test = _write_split(data / "test.csv", 200, 2)
    out = tmp_path / "run"
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(textwrap.dedent(f"""
        Global: {{output_dir: {out}, epochs: 8, batch_size: 32, progress: false, seed: 3}}
        Optimizer: {{lr: 0.01}}
        Arch: {{name: toy_mlp}}
        Data: {{root: {data}}}
    """), encoding="utf-8")

    train = _tool("train.py", ["-c", str(cfg)], plugin_env)
    assert train["accuracy"] >= 0.9, train
    ckpt = os.path.join(str(out), "checkpoints", "best")
    ev = _tool("eval.py", ["-c", str(cfg), "-o", f"Global.checkpoint={ckpt}", "--split", "test"], plugin_env)
    assert ev["accuracy"] >= 0.9 and ev["samples"] == 200

    export_dir = tmp_path / "export"
    ex = _tool("export.py", ["-c", str(cfg), "-o", f"Global.checkpoint={ckpt}", "--out", str(export_dir),
                             "--no-onednn-check"], plugin_env)
    assert ex["parity_max_rel_err"] <= 1e-5 and ex["labels"] == ["neg", "pos"]

    pred_csv = tmp_path / "pred.csv"
    inf = _tool("infer.py", ["--model-dir", str(export_dir), "--input", str(data / "test.csv"), "--out",
                             str(pred_csv), "--no-progress"], plugin_env)
    assert inf["items"] == 200 and inf["accuracy"] == pytest.approx(ev["accuracy"], abs=1e-9)
    rows = [json.loads(line) for line in open(tmp_path / "pred.jsonl", encoding="utf-8")]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(200)]
    assert all(set(r["probabilities"]) == {"neg", "pos"} for r in rows)
    assert np.mean([r["label"] for r in rows] == y_test) >= 0.9
