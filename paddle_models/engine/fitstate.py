"""What one ``Trainer.fit()`` carries between its steps (:class:`FitState`), the progress bar, and the weight
digest that checks data-parallel ranks agree."""
from __future__ import annotations

import os
import time

import numpy as np


class FitState:
    """What one ``fit()`` carries between its steps: the model and optimizers, the position and best
    metric (saved in checkpoints as the trainer state), and the progress window."""

    SAVED = ("epoch", "batch_in_epoch", "step", "best", "best_metrics", "bad_evals", "history", "samples")

    def __init__(self, model, optimizers, schedulers, total_steps: int):
        self.model, self.train_model = model, model
        self.optimizers, self.schedulers, self.total_steps = optimizers, schedulers, total_steps
        self.state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best": None, "best_metrics": None,
                      "bad_evals": 0, "history": [], "samples": 0}
        self.last_eval_step = -1
        self.stop_reason = "epochs"  # or "max_steps", "early_stopping"
        self.t_window, self.n_window = time.time(), 0
        self.bar = None

    @staticmethod
    def last_path(ckpt_dir: str) -> str:
        return os.path.join(ckpt_dir, "last")

    def trainer_state(self) -> dict:
        return {k: self.state[k] for k in self.SAVED}


def weights_digest(model) -> str:
    """sha256 over every parameter and buffer, in state-dict order (bitwise identity check)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def progress_bar(total, desc, enabled, initial=0):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, initial=initial, unit="step", dynamic_ncols=True, leave=False)

    class _Null:
        def update(self, n=1):
            pass

        def set_postfix(self, **k):
            pass

        def close(self):
            pass

    return _Null()
