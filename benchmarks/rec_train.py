#!/usr/bin/env python
"""Training throughput of the rec models on Frappe, measured the way the Trainer trains.

For every model of ``configs/rec/<model>_frappe.yaml``: the same data path (row-index dataset, batch
collate by one numpy take per array), ``to_tensors``, ``task.forward_loss``, backward and every optimizer's
step, batch 1024. ``--warmup`` steps are discarded, then ``--steps`` steps are timed; the models take turns
over ``--rounds`` rounds (so load from other processes hits all of them alike) and the best round counts.

If ``torch`` and ``fuxictr`` are importable (optional; never a dependency of this project), the same models
from FuxiCTR's model zoo (``$FUXICTR_MODEL_ZOO``: a FuxiCTR checkout's ``model_zoo`` folder) run on the same
batches in the same process and the table adds the ratio ours / FuxiCTR (goal: >= 1.0).

    python benchmarks/rec_train.py [--models lr fm deepfm] [--steps 30] [--rounds 2] [--threads 0] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

MODELS = ["lr", "fm", "ffm", "deepfm", "deepffm", "widedeep", "xdeepfm", "dcn", "dcnv2"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OursRunner:
    def __init__(self, name, args, tmp):
        from paddle_models.config import load_config
        from paddle_models.registry import get_task

        path = os.path.join(REPO, "configs", "rec", f"{name}_frappe.yaml")
        over = [f"Global.output_dir={os.path.join(tmp, name)}", f"Global.batch_size={args.batch_size}"]
        if args.data:
            over.append(f"Data.path={args.data}")
        self.cfg = load_config(path, over)
        self.task = get_task("rec")(self.cfg)
        self.task.prepare(os.path.join(tmp, name))
        self.model = self.task.build_model()
        self.model.train()
        self.opts, _ = self.task.build_optimizers(self.model, 10 ** 6)
        self.ds = self.task.dataset("train")
        self.collate = self.task.collate_fn("train")
        self.rng = np.random.RandomState(0)
        self.bs = args.batch_size
        self.order, self.pos = self.rng.permutation(len(self.ds)), 0

    def step(self):
        from paddle_models.engine.loader import fetch, to_tensors

        if self.pos + self.bs > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.ds)), 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        batch = self.collate(fetch(self.ds, idx))
        loss, _ = self.task.forward_loss(self.model, to_tensors(batch))
        loss.backward()
        for o in self.opts:
            o.step()
            o.clear_grad()
        return float(loss)

    def batches(self, n):
        """The raw numpy batches, for the FuxiCTR side."""
        from paddle_models.engine.loader import fetch

        out = []
        for _ in range(n):
            idx = self.rng.randint(0, len(self.ds), self.bs)
            out.append(self.collate(fetch(self.ds, idx)))
        return out


class FuxiRunner:
    """The same model in FuxiCTR (PyTorch), on the same id batches; built only when importable."""

    CLASSES = {"lr": "LR", "fm": "FM", "ffm": "FFM", "deepfm": "DeepFM", "deepffm": "ONN", "widedeep": "WideDeep",
               "xdeepfm": "xDeepFM", "dcn": "DCN", "dcnv2": "DCNv2"}

    def __init__(self, name, ours):
        import importlib

        import torch
        from fuxictr.features import FeatureMap

        zoo = os.environ.get("FUXICTR_MODEL_ZOO")
        if not zoo:
            raise RuntimeError("set FUXICTR_MODEL_ZOO to a FuxiCTR checkout's model_zoo folder")
        cls_name = self.CLASSES[name]
        src = os.path.join(zoo, cls_name, "src")
        sys.path.insert(0, src)
        model_cls = getattr(importlib.import_module(cls_name), cls_name)
        arch = ours.cfg["Arch"]
        fmap = FeatureMap("frappe_bench", "/tmp")
        names = list(ours.cfg["Data"]["field_names"])
        for f in names:
            feat = ours.task.data.fmap.by_name[f]
            fmap.features[f] = {"type": "categorical", "source": "", "vocab_size": feat.size + 1,
                                "padding_idx": 0}
        fmap.labels = ["label"]
        fmap.num_fields = len(names)
        fmap.total_features = sum(v["vocab_size"] for v in fmap.features.values())
        fmap.set_column_index()
        self.offsets = np.array([ours.task.data.fmap.by_name[f].offset for f in names])
        self.names = names
        self.model = model_cls(fmap, model_id="bench", gpu=-1, learning_rate=1e-3,
                               embedding_dim=int(arch["embedding_dim"]), hidden_units=list(arch["hidden_units"]),
                               dnn_hidden_units=list(arch["hidden_units"]), net_dropout=float(arch["net_dropout"]),
                               batch_norm=bool(arch["batch_norm"]),
                               embedding_regularizer=float(arch["embedding_regularizer"]))
        self.model.compile("adam", "binary_crossentropy", lr=1e-3)
        self.model.train()
        self.torch = torch

    def step_on(self, batch):
        torch = self.torch
        ids = batch["ids"][:, :len(self.names)] - self.offsets + 1
        X = torch.from_numpy(np.concatenate([ids, batch["label"][:, None].astype(np.int64)], 1))
        self.model.optimizer.zero_grad()
        out = self.model.forward(X)
        loss = self.model.compute_loss(out, self.model.get_labels(X))
        loss.backward()
        self.model.optimizer.step()
        return float(loss)


def fuxictr_available():
    try:
        import fuxictr  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return False, f"not installed ({e.name})"
    return True, ""


def timed(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores, as the Trainer)")
    ap.add_argument("--data", default="", help="the Frappe libfm file (default: the configs' Data.path)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import tempfile

    import paddle

    threads = args.threads or (os.cpu_count() or 1)
    paddle.base.core.set_num_threads(threads)
    have_fuxi, why = fuxictr_available()
    if have_fuxi:
        import torch

        torch.set_num_threads(threads)
    tmp = tempfile.mkdtemp(prefix="rec_bench_")
    runners, fuxi, notes = {}, {}, {}
    for m in args.models:
        runners[m] = OursRunner(m, args, tmp)
        if have_fuxi:
            try:
                fuxi[m] = FuxiRunner(m, runners[m])
            except Exception as e:  # a FuxiCTR version with other signatures: report, keep going
                notes[m] = f"FuxiCTR side failed: {type(e).__name__}: {e}"
    best = {m: 0.0 for m in args.models}
    best_fx = {m: 0.0 for m in fuxi}
    for r in range(args.rounds):
        for m in args.models:
            dt = timed(runners[m].step, args.warmup if r == 0 else 1, args.steps)
            best[m] = max(best[m], args.steps * args.batch_size / dt)
            if m in fuxi:
                batches = runners[m].batches(args.steps + args.warmup)
                it = iter(batches)
                dt = timed(lambda: fuxi[m].step_on(next(it)), args.warmup, args.steps)
                best_fx[m] = max(best_fx[m], args.steps * args.batch_size / dt)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"rec training throughput on Frappe, batch {args.batch_size}, {threads} thread(s), "
          f"best of {args.rounds} rounds x {args.steps} steps (1-min load average at the end: {load:.1f})")
    header = f"{'model':10s} {'ours samples/s':>15s}"
    if have_fuxi:
        header += f" {'FuxiCTR samples/s':>18s} {'ratio':>6s}"
    print(header)
    rows = []
    for m in args.models:
        line = f"{m:10s} {best[m]:15.0f}"
        row = {"model": m, "samples_per_s": round(best[m], 1)}
        if m in best_fx:
            line += f" {best_fx[m]:18.0f} {best[m] / best_fx[m]:6.2f}"
            row.update(fuxictr_samples_per_s=round(best_fx[m], 1), ratio=round(best[m] / best_fx[m], 3))
        print(line)
        rows.append(row)
    if not have_fuxi:
        print(f"FuxiCTR side skipped: fuxictr/torch {why}; no ratios.")
    for m, n in notes.items():
        print(f"{m}: {n}")
    if args.json:
        print(json.dumps({"threads": threads, "batch_size": args.batch_size, "load_average": load,
                          "fuxictr": have_fuxi or why, "models": rows, "notes": notes}))


if __name__ == "__main__":
    main()
