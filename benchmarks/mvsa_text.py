#!/usr/bin/env python
"""MVSA-Single text: the random-initialised network of configs/multimodal/mvsa_text.yaml beside a TF-IDF +
logistic-regression baseline, on the same splits, measured in one run.

The baseline: scikit-learn word 1-2 grams + character 2-5 grams (TF-IDF, sublinear tf), a multinomial
logistic regression whose C is chosen on the dev split's macro-F1; the network: the preset's defaults
(early stopping on dev macro-F1), its best checkpoint scored on the test split.

    python benchmarks/mvsa_text.py [--data ../shared/data/mvsa_single] [--out output/bench_mvsa] [--json]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from paddle_models.runtime import cpu_name  # noqa: E402

CONFIG = os.path.join(ROOT, "configs", "multimodal", "mvsa_text.yaml")
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def read_split(root: str, split: str):
    from paddle_models.multimodal.dataset import split_file
    from paddle_models.multimodal.readers import DEFAULT_LABEL_NAMES, read_mvsa

    names = DEFAULT_LABEL_NAMES["mvsa"]
    recs = read_mvsa(split_file("mvsa", root, split), root, names, require_label=True, allow_empty_text=True)
    return [r.text for r in recs], [r.label for r in recs], names


def tfidf_baseline(root: str) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import FeatureUnion, make_pipeline

    (xtr, ytr, _), (xdv, ydv, _), (xte, yte, _) = (read_split(root, s) for s in ("train", "val", "test"))
    t0 = time.time()
    best = None
    for c in C_GRID:
        feats = FeatureUnion([("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
                              ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                                       min_df=2))])
        model = make_pipeline(feats, LogisticRegression(C=c, max_iter=3000))
        model.fit(xtr, ytr)
        f1 = f1_score(ydv, model.predict(xdv), average="macro")
        if best is None or f1 > best[0]:
            best = (f1, c, model)
    f1_dev, c, model = best
    pred = model.predict(xte)
    return {"C": c, "dev_macro_f1": f1_dev, "test_accuracy": float(accuracy_score(yte, pred)),
            "test_macro_f1": float(f1_score(yte, pred, average="macro")), "seconds": round(time.time() - t0, 1),
            "train_items": len(xtr), "test_items": len(xte)}


def network(root: str, out: str, extra) -> dict:
    from paddle_models.config import load_config
    from paddle_models.engine.trainer import Trainer
    from paddle_models.registry import get_task

    over = [f"Data.root={root}", f"Global.output_dir={out}", "Global.progress=false", *extra]
    t0 = time.time()
    cfg = load_config(CONFIG, over)
    fit = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    cfg = load_config(CONFIG, over + [f"Global.checkpoint={os.path.join(out, 'checkpoints', 'best')}"])
    test = Trainer(cfg, get_task("multimodal")(cfg)).evaluate("test")
    return {"dev_macro_f1": fit["macro_f1"], "epochs_run": fit["epochs_run"], "stop_reason": fit["stop_reason"],
            "best_step": fit["best_step"], "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
            "seconds": round(time.time() - t0, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "mvsa_single"))
    p.add_argument("--out", default="output/bench_mvsa")
    p.add_argument("-o", "--override", action="append", default=[], help="config overrides for the network")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not os.path.isdir(args.data):
        print(f"error: {args.data}: MVSA-Single folder not found (train.json, dev.json, test.json)", file=sys.stderr)
        return 2
    res = {"cpu": cpu_name(), "cores": os.cpu_count(), "tfidf_logreg": tfidf_baseline(args.data)}
    res["network"] = network(args.data, args.out, args.override)
    print(f"CPU: {res['cpu']} ({res['cores']} cores)")
    print(f"{'model':<28} {'test acc':>9} {'test macro-F1':>14} {'dev macro-F1':>13} {'seconds':>8}")
    for name, key in (("TF-IDF + logistic reg.", "tfidf_logreg"), ("network (mvsa_text.yaml)", "network")):
        r = res[key]
        print(f"{name:<28} {r['test_accuracy']:>9.4f} {r['test_macro_f1']:>14.4f} {r['dev_macro_f1']:>13.4f} "
              f"{r['seconds']:>8.1f}")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
