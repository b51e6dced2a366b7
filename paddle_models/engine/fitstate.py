"""What one ``Trainer.fit()`` carries between its steps (:class:`FitState`), the progress bar, the weight
digest that checks data-parallel ranks agree, and the finiteness checks of weights and eval metrics."""
from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

log = logging.getLogger("paddle_models")


class NonFiniteLossError(RuntimeError):
    """A training loss was NaN or infinite (``Global.on_nonfinite: stop``); the last good checkpoint is kept."""


class NonFiniteWeightsError(NonFiniteLossError):
    """A parameter holds a NaN or an infinity (an optimizer step diverged); nothing more is evaluated or saved."""


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


def first_nonfinite_weight(model) -> str | None:
    """The name of the first parameter holding a NaN or an infinity; None when every one is finite."""
    import paddle

    for name, param in model.named_parameters():
        if not bool(paddle.isfinite(param).all()):
            return name
    return None


def nonfinite_metrics(record: dict) -> list[str]:
    """``["loss=nan", ...]``: the numbers of an evaluation record that are not finite."""
    return [f"{k}={v}" for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]


def guard_weights(model, step: int, last_checkpoint: str, lr) -> None:
    """:class:`NonFiniteWeightsError` naming the parameter, the step and the last good checkpoint when a weight
    of ``model`` is not finite."""
    name = first_nonfinite_weight(model)
    if name is None:
        return
    kept = last_checkpoint if os.path.isdir(last_checkpoint) else "(none written yet)"
    raise NonFiniteWeightsError(
        f"non-finite weights ({name} holds NaN or infinity) after step {step}: training stopped without evaluating "
        f"or saving them; the last good checkpoint is kept at {kept}. Lower Optimizer.lr (now {lr}), set "
        f"Optimizer.grad_clip, or check the data.")


def selectable(record: dict) -> bool:
    """An evaluation record may become the best checkpoint only when every one of its metrics is finite (a
    warning names those that are not)."""
    bad = nonfinite_metrics(record)
    if bad:
        log.warning("step %s: evaluation metrics are not finite (%s): not a candidate for the best checkpoint",
                    record.get("step"), ", ".join(bad))
    return not bad


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
