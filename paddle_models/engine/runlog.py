"""A training run's metrics log: ``<output_dir>/metrics.jsonl`` (one JSON object per train or eval record),
optionally mirrored to VisualDL, and its PNG of curves."""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from ..fileio import write_text_atomic

log = logging.getLogger("paddle_models")

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Appends records to ``<output_dir>/metrics.jsonl``; ``vdl`` (a VisualDL LogWriter or None) gets the
    numeric fields too."""

    def __init__(self, output_dir: str, vdl=None):
        self.path = os.path.join(output_dir, METRICS_FILE)
        self.output_dir = output_dir
        self.vdl = vdl

    def append(self, record: dict) -> None:
        record = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.vdl is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.vdl.add_scalar(f"{record.get('type', 'train')}/{k}", v, record.get("step", 0))

    def reset(self) -> None:
        """Start an empty log (a fresh run)."""
        if os.path.exists(self.path):
            os.remove(self.path)

    def keep_until(self, step: int) -> int:
        """Drop the records logged after optimizer step ``step`` (a resumed run logs them again); the file is
        rewritten atomically. Returns how many records were dropped."""
        if not os.path.isfile(self.path):
            return 0
        kept, dropped = [], 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rec_step = json.loads(line).get("step", 0)
                except (ValueError, AttributeError):
                    rec_step = None  # a line cut by the interruption
                if rec_step is None or rec_step > step:
                    dropped += 1
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
        if dropped:
            write_text_atomic(self.path, "".join(kept))
            log.info("%s: dropped %d records logged after step %d (they are logged again from here)",
                     self.path, dropped, step)
        return dropped

    def write_curves(self) -> None:
        """``curves.png`` beside the log; a failure to draw is a warning, never a failed run."""
        try:
            from ..plots import plot_training_curves
        except ImportError:
            return
        if os.path.isfile(self.path):
            try:
                plot_training_curves(self.path, os.path.join(self.output_dir, "curves.png"))
            except Exception as e:
                log.warning("could not draw curves.png: %s", e)
