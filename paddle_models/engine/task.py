"""The interface between a model family and the one engine.

A family registers one ``Task`` subclass with ``@register_task("<family>")``. The ``Trainer`` owns the
loop (data loading, sharding, accumulation, evaluation, checkpoints, resume, logs); the task says how to
build data, compute a loss, turn outputs into metrics and export. Everything a task returns to the
engine is either a paddle Tensor (loss) or numpy arrays (predictions), never Python strings in forward.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import paddle

from ..registry import build_model


def _missing(task, method: str):
    raise TypeError(f"{type(task).__name__} does not implement {method}(); a family's task must override it")


class Task:
    family: str = ""
    #: metric used to select the best checkpoint, and whether larger is better
    best_metric: str = "loss"
    best_mode: str = "min"
    #: predict_step only calls ``model(...)`` on its export inputs, so it can run on the exported graph
    #: (``Global.eval_engine: inference``)
    eval_on_export: bool = False

    def __init__(self, cfg):
        self.cfg = cfg
        self.output_dir = cfg["Global"]["output_dir"]

    # ---- setup -------------------------------------------------------------------------------
    def prepare(self, output_dir: str, is_main: bool = True) -> None:
        """Build what data needs before datasets exist (vocabularies, tokenizers) and save it under
        ``output_dir`` so eval/export/infer reuse it. Rank 0 runs it first; other ranks after a barrier
        (with ``is_main=False``: they must only load what rank 0 wrote)."""

    def build_model(self) -> paddle.nn.Layer:
        return build_model(self.cfg)

    # ---- data --------------------------------------------------------------------------------
    def dataset(self, split: str):
        """A ``paddle.io.Dataset`` (map-style; the Trainer shuffles and shards it) or a
        ``paddle.io.IterableDataset`` with ``set_epoch(epoch)`` and ``set_shard(rank, world_size)``."""
        _missing(self, "dataset")

    def collate_fn(self, split: str):
        """Batch samples into a dict of numpy arrays (tokenizing, decoding, padding happen here)."""
        return None

    def batch_size_of(self, batch) -> int:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    # ---- steps -------------------------------------------------------------------------------
    def forward_loss(self, model, batch) -> Tuple[paddle.Tensor, Dict[str, float]]:
        """Mean loss of the batch (a scalar Tensor) and extra scalars to log."""
        _missing(self, "forward_loss")

    def predict_step(self, model, batch) -> Dict[str, np.ndarray]:
        """Per-sample outputs of one eval batch, as numpy arrays with the batch on axis 0."""
        _missing(self, "predict_step")

    def compute_metrics(self, outputs: Dict[str, np.ndarray]) -> Dict[str, float]:
        """Metrics from all eval outputs (concatenated over batches and ranks)."""
        _missing(self, "compute_metrics")

    def write_eval_artifacts(self, outputs: Dict[str, np.ndarray], metrics: dict, out_dir: str, split: str) -> dict:
        """Write confusion matrices, prediction files... Return {name: path} to report."""
        return {}

    def default_eval_split(self) -> str:
        """The split ``tools/eval.py`` evaluates when no ``--split`` is given."""
        return "val"

    def run_summary(self) -> dict:
        """Data counters for the run summary (bad images skipped or blanked, truncated texts...)."""
        return {}

    # ---- optimization ------------------------------------------------------------------------
    def build_optimizers(self, model, total_steps: int) -> Tuple[List[paddle.optimizer.Optimizer], list]:
        """Optimizers and LR schedulers (each scheduler is stepped once per optimizer step).
        The default builds one optimizer from the ``Optimizer`` section over all trainable parameters."""
        sched = build_scheduler(self.cfg["Optimizer"], total_steps)
        opt = build_optimizer(self.cfg["Optimizer"], model.parameters(), sched)
        return [opt], ([sched] if isinstance(sched, paddle.optimizer.lr.LRScheduler) else [])

    # ---- export (see paddle_models.engine.export) --------------------------------------------
    def export_input_spec(self, model) -> list:
        """``paddle.static.InputSpec`` list for ``paddle.jit.save`` (dynamic batch and lengths)."""
        _missing(self, "export_input_spec")

    def export_variants(self, model) -> Dict[str, tuple]:
        """Named graphs to export: ``{name: (layer, input_spec, example_inputs)}``. The default is the
        whole model; DSSM exports its user and item towers, the Transformer its encoder and a decoder step."""
        return {"model": (model, self.export_input_spec(model), self.example_batch(model))}

    def example_batch(self, model, batch_size: int = 2) -> dict:
        """A batch of inputs (numpy) matching ``export_input_spec``, for parity checks."""
        _missing(self, "example_batch")


# ---- shared optimizer / schedule builders ----------------------------------------------------
def build_scheduler(ocfg, total_steps: int):
    lr = float(ocfg["lr"])
    name = ocfg.get("schedule", "constant")
    warmup = int(ocfg.get("warmup_steps") or 0) or int(round(float(ocfg.get("warmup_ratio") or 0.0) * total_steps))
    total_steps = max(int(total_steps), 1)
    if name == "constant":
        if warmup > 0:
            return paddle.optimizer.lr.LambdaDecay(lr, lambda s: min(1.0, (s + 1) / warmup))
        return lr
    if name == "linear":

        def f(step):
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return paddle.optimizer.lr.LambdaDecay(lr, f)
    if name == "cosine":

        def g(step):
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            p = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

        return paddle.optimizer.lr.LambdaDecay(lr, g)
    if name == "noam":
        # lr here is the paper's scale factor times d_model^-0.5 already folded in by the caller's config
        w = max(1, warmup)
        return paddle.optimizer.lr.LambdaDecay(lr, lambda s: min((s + 1) ** -0.5, (s + 1) * w ** -1.5) * w ** 0.5)
    raise ValueError(f"Optimizer.schedule: unknown schedule {name!r} (constant, linear, cosine, noam)")


def _is_no_decay(param) -> bool:
    n = param.name.lower()
    return len(param.shape) <= 1 or "bias" in n or "norm" in n or "layer_norm" in n


def build_optimizer(ocfg, parameters, learning_rate):
    params = [p for p in parameters if not p.stop_gradient]
    name = ocfg["name"].lower()
    clip = paddle.nn.ClipGradByGlobalNorm(float(ocfg["grad_clip"])) if float(ocfg.get("grad_clip") or 0) > 0 else None
    wd = float(ocfg.get("weight_decay") or 0.0)
    if name == "adamw":
        decay_names = {p.name for p in params if not (ocfg.get("no_decay_bias_norm", True) and _is_no_decay(p))}
        return paddle.optimizer.AdamW(
            learning_rate=learning_rate, parameters=params, beta1=ocfg["beta1"], beta2=ocfg["beta2"],
            epsilon=ocfg["epsilon"], weight_decay=wd, grad_clip=clip,
            apply_decay_param_fun=lambda n: n in decay_names,
        )
    if name == "adam":
        return paddle.optimizer.Adam(
            learning_rate=learning_rate, parameters=params, beta1=ocfg["beta1"], beta2=ocfg["beta2"],
            epsilon=ocfg["epsilon"], weight_decay=wd or None, grad_clip=clip,
        )
    if name == "adagrad":
        return paddle.optimizer.Adagrad(learning_rate=learning_rate, parameters=params, epsilon=ocfg["epsilon"],
                                        weight_decay=wd or None, grad_clip=clip)
    if name == "sgd":
        return paddle.optimizer.SGD(learning_rate=learning_rate, parameters=params, weight_decay=wd or None,
                                    grad_clip=clip)
    raise ValueError(f"Optimizer.name: unknown optimizer {ocfg['name']!r} (AdamW, Adam, Adagrad, SGD)")
