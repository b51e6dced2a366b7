#!/usr/bin/env python
"""Training throughput of the rec models on Frappe, measured the way the Trainer trains.

For every model of ``configs/rec/<model>_frappe.yaml``: the same data path (row-index dataset, batch
collate by one numpy take per array), ``to_tensors``, ``task.forward_loss``, backward and every optimizer's
step, batch 1024. ``--warmup`` steps are discarded, then ``--steps`` steps are timed; the models take turns
over ``--rounds`` rounds (so load from other processes hits all of them alike) and the best round counts.

With ``torch`` and ``fuxictr`` importable (optional; never a dependency of this project; ``make
bench-rec-peer`` builds a venv with both) and a FuxiCTR checkout (``--fuxictr PATH``: its root or its
``model_zoo`` folder; else ``$FUXICTR_MODEL_ZOO``), the same models from FuxiCTR's model zoo train in the
same process, on the same batches (the same row indices, gathered into one tensor per feature as
FuxiCTR's loaders do), with our configs' architecture hyperparameters, FuxiCTR's own ``train_step``
(forward, loss with its regularizers, backward, gradient-norm clipping, optimizer step), the same number
of threads and the same timing; the table adds the ratio ours / FuxiCTR (goal: >= 1.0). A model the
zoo lacks gets a note; a FuxiCTR model that fails to build gets a note and makes the exit status 1.

    python benchmarks/rec_train.py [--models lr fm deepfm] [--steps 30] [--rounds 2] [--threads 0]
                                   [--fuxictr PATH] [--json]
"""
import argparse
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from paddle_models.runtime import cpu_name  # noqa: E402

MODELS = ["lr", "fm", "ffm", "deepfm", "deepffm", "widedeep", "xdeepfm", "dcn", "dcnv2"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IndexStream:
    """Batches of row indices: epochs of a seeded permutation. Two streams with one seed give the same batches."""

    def __init__(self, n, batch_size, seed=0):
        self.n, self.bs = n, batch_size
        self.rng = np.random.RandomState(seed)
        self.order, self.pos = self.rng.permutation(n), 0

    def next(self):
        if self.pos + self.bs > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        idx = self.order[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx


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
        self.stream = IndexStream(len(self.ds), args.batch_size)

    def step(self):
        from paddle_models.engine.loader import fetch, to_tensors

        batch = self.collate(fetch(self.ds, self.stream.next()))
        loss, _ = self.task.forward_loss(self.model, to_tensors(batch))
        loss.backward()
        for o in self.opts:
            o.step()
            o.clear_grad()
        return float(loss)


def zoo_folder(path):
    """A FuxiCTR checkout's ``model_zoo`` folder from its root or the folder itself."""
    path = os.path.abspath(os.path.expanduser(path))
    for cand in (path, os.path.join(path, "model_zoo")):
        if os.path.isdir(os.path.join(cand, "DCNv2")) or os.path.isdir(os.path.join(cand, "DeepFM")):
            return cand
    raise FileNotFoundError(f"{path}: not a FuxiCTR checkout (no model_zoo/DeepFM or DCNv2 folder)")


def load_zoo_class(zoo, cls_name):
    """A model class of FuxiCTR's model zoo. Its folder is ``<Model>/src`` (one PyTorch version) or
    ``<Model>/<Model>_torch/src`` (PyTorch and TensorFlow versions side by side); ``src`` is a package
    (``from .DeepFM import *``), loaded under its own name so that models' ``src`` packages don't collide."""
    for src in (os.path.join(zoo, cls_name, "src"), os.path.join(zoo, cls_name, f"{cls_name}_torch", "src")):
        init = os.path.join(src, "__init__.py")
        if os.path.isfile(init):
            mod_name = f"_fuxictr_zoo_{cls_name}"
            spec = importlib.util.spec_from_file_location(mod_name, init, submodule_search_locations=[src])
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
            if not hasattr(mod, cls_name):
                raise ImportError(f"{init}: no class {cls_name}")
            return getattr(mod, cls_name)
    return None


def _reg(x):
    """Our L2 coefficient -> FuxiCTR's regularizer argument (a float is L2 with (lambda/2)*||W||^2)."""
    return float(x) if float(x) > 0 else None


def fuxi_kwargs(name, arch):
    """FuxiCTR constructor arguments with our config's architecture (their names differ per model)."""
    hidden = [int(h) for h in (arch.get("hidden_units") or [])]
    deep = dict(net_dropout=float(arch["net_dropout"]), batch_norm=bool(arch["batch_norm"]),
                embedding_regularizer=_reg(arch["embedding_regularizer"]),
                net_regularizer=_reg(arch["net_regularizer"]))
    act = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU", "leaky_relu": "LeakyReLU"}[
        arch["hidden_activation"]]
    if name in ("lr", "fm", "ffm"):  # these take one `regularizer` for both embeddings and weights
        if float(arch["embedding_regularizer"]) != float(arch["net_regularizer"]):
            raise ValueError(f"{name}: FuxiCTR has one regularizer for embeddings and weights")
        kw = {"regularizer": _reg(arch["embedding_regularizer"])}
        if name != "lr":
            kw["embedding_dim"] = int(arch["embedding_dim"])
        return kw
    if name in ("deepfm", "widedeep", "deepffm"):
        return dict(embedding_dim=int(arch["embedding_dim"]), hidden_units=hidden, hidden_activations=act, **deep)
    if name == "xdeepfm":
        return dict(embedding_dim=int(arch["embedding_dim"]), dnn_hidden_units=hidden, dnn_activations=act,
                    cin_hidden_units=[int(u) for u in arch["cin_layer_units"]], **deep)
    if name == "dcn":
        return dict(embedding_dim=int(arch["embedding_dim"]), dnn_hidden_units=hidden, dnn_activations=act,
                    num_cross_layers=int(arch["num_cross_layers"]), **deep)
    if name == "dcnv2":
        kw = dict(embedding_dim=int(arch["embedding_dim"]), dnn_activations=act,
                  num_cross_layers=int(arch["num_cross_layers"]), model_structure=arch["model_structure"],
                  use_low_rank_mixture=bool(arch["use_low_rank_mixture"]), **deep)
        if arch["model_structure"] in ("stacked", "stacked_parallel"):
            kw["stacked_dnn_hidden_units"] = hidden
        if arch["model_structure"] in ("parallel", "stacked_parallel"):
            kw["parallel_dnn_hidden_units"] = hidden
        if arch["use_low_rank_mixture"]:
            kw.update(low_rank=int(arch["low_rank"]), num_experts=int(arch["num_experts"]))
        return kw
    raise KeyError(name)


class FuxiRunner:
    """The same model in FuxiCTR (PyTorch) on the same batches; built only when torch and fuxictr import."""

    CLASSES = {"lr": "LR", "fm": "FM", "ffm": "FFM", "deepfm": "DeepFM", "deepffm": "ONN", "widedeep": "WideDeep",
               "xdeepfm": "xDeepFM", "dcn": "DCN", "dcnv2": "DCNv2"}
    # where FuxiCTR's model is not the same architecture as our config's, the table says how
    DIFFERS = {"deepffm": "FuxiCTR's ONN sums each field-aware product (DNN input F*D + F(F-1)/2) and has no "
                          "linear part; ours (deepffm_interaction: hadamard) feeds the F(F-1)/2*D products",
               "widedeep": "FuxiCTR's WideDeep: no cross-product features in the wide part, Adam on every weight; "
                           "ours: 5 crosses, FTRL-Proximal (wide) + AdaGrad (deep)"}

    def __init__(self, name, ours, zoo, args, tmp):
        import torch
        from fuxictr.features import FeatureMap

        self.torch = torch
        cls_name = self.CLASSES[name]
        model_cls = load_zoo_class(zoo, cls_name)
        if model_cls is None:
            raise LookupError(f"FuxiCTR's model zoo has no {cls_name}")
        arch, ocfg = ours.cfg["Arch"], ours.cfg["Optimizer"]
        layout = ours.task.data.fmap
        names = list(ours.cfg["Data"]["field_names"])
        dim = int(arch["embedding_dim"])
        fmap = FeatureMap("frappe_bench", tmp)
        fmap.default_emb_dim = dim
        for f in names:
            fmap.features[f] = {"type": "categorical", "source": "", "vocab_size": layout.by_name[f].size + 1,
                                "padding_idx": 0}
        fmap.labels = ["label"]
        fmap.num_fields = len(names)
        fmap.total_features = sum(v["vocab_size"] for v in fmap.features.values())
        fmap.set_column_index()
        # FuxiCTR's ids per field: ours minus the field's offset in our shared table, + 1 (0 = padding)
        arrays = ours.ds.arrays
        self.cols = {f: np.ascontiguousarray(arrays["ids"][:, i] - layout.by_name[f].offset + 1)
                     for i, f in enumerate(names)}
        self.label = np.ascontiguousarray(arrays["label"], dtype=np.float32)
        lr = float(ocfg["lr"]) if ocfg["name"].lower() == "adam" else 1e-3  # FuxiCTR's models all train with Adam
        self.model = model_cls(fmap, model_id=f"bench_{cls_name}", gpu=-1, learning_rate=lr, optimizer="adam",
                               loss="binary_crossentropy", task="binary_classification", verbose=0,
                               model_root=os.path.join(tmp, "fuxictr"), metrics=["logloss", "AUC"],
                               **fuxi_kwargs(name, arch))
        self.model._max_gradient_norm = float(ocfg.get("grad_clip") or 0) or float("inf")
        self.model.train()
        self.stream = IndexStream(len(ours.ds), args.batch_size)

    def step(self):
        idx = self.stream.next()
        batch = {f: self.torch.from_numpy(c[idx]) for f, c in self.cols.items()}
        batch["label"] = self.torch.from_numpy(self.label[idx])
        return self.model.train_step(batch).item()


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
    ap.add_argument("--fuxictr", default=os.environ.get("FUXICTR_MODEL_ZOO", ""),
                    help="a FuxiCTR checkout (its root or model_zoo folder; default $FUXICTR_MODEL_ZOO)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import tempfile

    import paddle

    threads = args.threads or (os.cpu_count() or 1)
    paddle.base.core.set_num_threads(threads)
    have_fuxi, why = fuxictr_available()
    zoo = None
    if have_fuxi and not args.fuxictr:
        have_fuxi, why = False, "no FuxiCTR checkout (--fuxictr PATH or $FUXICTR_MODEL_ZOO)"
    if have_fuxi:
        import torch

        torch.set_num_threads(threads)
        zoo = zoo_folder(args.fuxictr)
    cpu = cpu_name()
    tmp = tempfile.mkdtemp(prefix="rec_bench_")
    runners, fuxi, notes, failed = {}, {}, {}, []
    for m in args.models:
        runners[m] = OursRunner(m, args, tmp)
        if have_fuxi:
            try:
                fuxi[m] = FuxiRunner(m, runners[m], zoo, args, tmp)
                if m in FuxiRunner.DIFFERS:
                    notes[m] = FuxiRunner.DIFFERS[m]
            except LookupError as e:  # a model FuxiCTR doesn't have: a note
                notes[m] = str(e)
            except Exception as e:
                # a FuxiCTR version with other signatures: the table still prints, the exit status is 1
                notes[m] = f"FuxiCTR side FAILED: {type(e).__name__}: {e}"
                failed.append(m)
    best = {m: 0.0 for m in args.models}
    best_fx = {m: 0.0 for m in fuxi}
    for r in range(args.rounds):
        for m in args.models:
            dt = timed(runners[m].step, args.warmup if r == 0 else 1, args.steps)
            best[m] = max(best[m], args.steps * args.batch_size / dt)
            if m in fuxi:
                dt = timed(fuxi[m].step, args.warmup if r == 0 else 1, args.steps)
                best_fx[m] = max(best_fx[m], args.steps * args.batch_size / dt)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    versions = {"paddle": paddle.__version__}
    if have_fuxi:
        import fuxictr
        import torch

        versions.update(torch=torch.__version__, fuxictr=getattr(fuxictr, "__version__", "?"))
    print(f"rec training throughput on Frappe, CPU: {cpu}, batch {args.batch_size}, {threads} thread(s), "
          f"best of {args.rounds} rounds x {args.steps} steps (1-min load average at the end: {load:.1f}); "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
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
            row.update(fuxictr_samples_per_s=round(best_fx[m], 1), ratio=round(best[m] / best_fx[m], 3),
                       fuxictr_model=FuxiRunner.CLASSES[m])
        print(line)
        rows.append(row)
    if not have_fuxi:
        print(f"FuxiCTR side skipped: {why}; no ratios.")
    for m, n in notes.items():
        print(f"{m}: {n}")
    if args.json:
        print(json.dumps({"cpu": cpu, "threads": threads, "batch_size": args.batch_size, "load_average": load,
                          "versions": versions, "fuxictr": have_fuxi or why, "models": rows, "rows": rows,
                          "notes": notes, "fuxictr_failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
