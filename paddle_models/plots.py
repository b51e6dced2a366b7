"""PNG plots with matplotlib's Agg backend: confusion matrix and training curves.

``plot_confusion_matrix(cm, path, label_names)`` draws counts (and row-normalised shading).
``plot_training_curves(metrics_jsonl, path)`` reads a JSON-lines metrics log: one object per line,
with an x value (``step``, ``global_step`` or ``epoch``, first found) and numeric metrics. A record's
series name is ``<split>/<metric>`` when it has a ``split`` (or ``type`` / ``phase`` / ``mode``) field, so the
training loss and the validation loss share one panel. Keys ``time``, ``seconds``, ``timestamp``,
``samples_per_s`` and ``eta`` are not plotted. Keys already written ``val/loss`` style are used
as they are (the part after the last ``/`` picks the panel).
"""
from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .fileio import atomic_write

_X_KEYS = ("step", "global_step", "epoch")
_SPLIT_KEYS = ("split", "type", "phase", "mode")
_SKIP_KEYS = {"time", "seconds", "timestamp", "wall_time", "samples_per_s", "samples/s", "eta",
              "elapsed", "best", "num_samples", "eval_seconds", "eval_samples", "labelled"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _atomic_savefig(fig, path: str, dpi: int = 110) -> str:
    """``fig`` as a PNG at ``path``, written atomically (the folder is created when missing)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def plot_confusion_matrix(cm, path: str, label_names: Sequence[str] | None = None,
                          title: str = "Confusion matrix") -> str:
    """Write a confusion-matrix PNG (rows: true, columns: predicted) and return its path."""
    plt = _pyplot()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    c = cm.shape[0]
    names = list(label_names) if label_names is not None else [str(i) for i in range(c)]
    row = cm.sum(axis=1, keepdims=True).astype(np.float64)
    norm = np.divide(cm, row, out=np.zeros(cm.shape, dtype=np.float64), where=row > 0)
    size = max(3.5, 0.9 * c + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    try:
        return _atomic_savefig(fig, path)
    finally:
        plt.close(fig)


def read_metrics_log(path: str) -> list[dict]:
    """Records of a JSON-lines metrics log; a malformed line raises naming file and line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}: line {lineno}: expected a JSON object")
            records.append(rec)
    return records


def curve_series(records: Sequence[dict]) -> OrderedDict[str, OrderedDict[str, tuple[list, list]]]:
    """Group a metrics log into ``{panel: {series: (xs, ys)}}`` (see module doc)."""
    panels: OrderedDict[str, OrderedDict[str, tuple[list, list]]] = OrderedDict()
    fallback_x = 0
    for rec in records:
        x = None
        for k in _X_KEYS:
            if isinstance(rec.get(k), (int, float)):
                x = rec[k]
                break
        if x is None:
            fallback_x += 1
            x = fallback_x
        split = None
        for k in _SPLIT_KEYS:
            if isinstance(rec.get(k), str):
                split = rec[k]
                break
        for key, val in rec.items():
            if key in _X_KEYS or key in _SPLIT_KEYS or key in _SKIP_KEYS:
                continue
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                continue
            if not math.isfinite(float(val)):
                continue
            panel = key.rsplit("/", 1)[-1]
            series = key if "/" in key else (f"{split}/{key}" if split else key)
            panels.setdefault(panel, OrderedDict()).setdefault(series, ([], []))
            xs, ys = panels[panel][series]
            xs.append(x)
            ys.append(float(val))
    return panels


def plot_training_curves(metrics_jsonl: str, path: str, title: str | None = None) -> str:
    """Write a PNG with one panel per metric (loss, lr, macro_f1, ...) from a metrics log."""
    plt = _pyplot()
    panels = curve_series(read_metrics_log(metrics_jsonl))
    if not panels:
        raise ValueError(f"{metrics_jsonl}: no numeric metrics to plot")
    n = len(panels)
    cols = min(3, n)
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    # the grid can hold more axes than there are panels (the spare ones are turned off below)
    for ax, (panel, series) in zip(axes.ravel(), panels.items(), strict=False):
        for name, (xs, ys) in series.items():
            marker = "o" if len(xs) < 30 else None
            ax.plot(xs, ys, label=name, marker=marker, markersize=3)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if panel in ("lr", "learning_rate"):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _atomic_savefig(fig, path)
    finally:
        plt.close(fig)
