"""The one-command demo: synthetic data -> train the small multimodal network -> evaluate -> summary.

The synthetic labels need both modalities (see ``multimodal/demo_data.py``), so the demo also shows
what each modality alone can do when asked (``ablations``).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence

from .fileio import write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "multimodal", "jsonl_small.yaml")
DEMO_EPOCHS = 2  # the demo's recipe: two epochs reach its thresholds (the preset itself stops early)


def make_data(out_dir: str, train: int, val: int, test: int, seed: int = 2026, image_size: int = 32) -> dict:
    """Write the demo dataset unless the same one (same sizes and seed) is already there."""
    from .multimodal import demo_data

    stamp = os.path.join(out_dir, "demo_data.json")
    want = {"train": train, "val": val, "test": test, "seed": seed, "image_size": image_size}
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            have = json.load(f)
        if have.get("request") == want:
            return have
    summary = demo_data.make_demo_data(out_dir, n_train=train, n_val=val, n_test=test, seed=seed,
                                       image_size=image_size)
    summary = {"request": want, **summary}
    write_json_atomic(stamp, summary, indent=1)
    return summary


def train_and_eval(data_dir: str, out_dir: str, modalities: Sequence[str], epochs: int | None = None,
                   extra: Sequence[str] = (), progress: bool = True) -> dict:
    from .config import load_config
    from .engine.trainer import Trainer
    from .registry import get_task

    overrides = [f"Data.root={data_dir}", f"Global.output_dir={out_dir}",
                 f"Arch.modalities=[{', '.join(modalities)}]", f"Global.progress={str(progress).lower()}"]
    overrides.append(f"Global.epochs={epochs or DEMO_EPOCHS}")
    cfg = load_config(DEMO_CONFIG, overrides + list(extra))
    t0 = time.time()
    fit = Trainer(cfg, get_task("multimodal")(cfg)).fit()
    cfg = load_config(DEMO_CONFIG, overrides + list(extra) + [f"Global.checkpoint={fit['best_checkpoint']}"])
    test = Trainer(cfg, get_task("multimodal")(cfg)).evaluate("test")
    return {"modalities": list(modalities), "val_macro_f1": fit["macro_f1"], "val_accuracy": fit["accuracy"],
            "test_macro_f1": test["macro_f1"], "test_accuracy": test["accuracy"], "steps": fit["steps"],
            "best_checkpoint": fit["best_checkpoint"], "seconds": round(time.time() - t0, 1),
            "test_artifacts": {k: v for k, v in test.items() if k.endswith(("_csv", "_png", "_txt"))},
            "curves_png": os.path.join(out_dir, "curves.png")}


def run_demo(out_root: str = "output/demo", train: int = 2400, val: int = 600, test: int = 600,
             epochs: int | None = None, ablations: bool = False, extra: Sequence[str] = (),
             progress: bool = True) -> dict:
    t0 = time.time()
    data_dir = os.path.join(out_root, "data")
    make_data(data_dir, train, val, test)
    runs = {"text+image": train_and_eval(data_dir, os.path.join(out_root, "text_image"), ["text", "image"],
                                         epochs, extra, progress)}
    if ablations:
        runs["text only"] = train_and_eval(data_dir, os.path.join(out_root, "text_only"), ["text"], epochs, extra,
                                           progress)
        runs["image only"] = train_and_eval(data_dir, os.path.join(out_root, "image_only"), ["image"], epochs,
                                            extra, progress)
    main = runs["text+image"]
    return {"macro_f1": main["val_macro_f1"], "test_macro_f1": main["test_macro_f1"],
            "test_accuracy": main["test_accuracy"], "runs": runs, "data_dir": os.path.abspath(data_dir),
            "seconds": round(time.time() - t0, 1)}


def format_table(result: dict) -> str:
    head = f"{'run':<12} {'val macro-F1':>12} {'test macro-F1':>13} {'test acc':>9} {'steps':>6} {'seconds':>8}"
    lines = [head, "-" * len(head)]
    for name, r in result["runs"].items():
        lines.append(f"{name:<12} {r['val_macro_f1']:>12.4f} {r['test_macro_f1']:>13.4f} {r['test_accuracy']:>9.4f} "
                     f"{r['steps']:>6d} {r['seconds']:>8.1f}")
    return "\n".join(lines)
