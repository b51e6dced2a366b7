"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013).

Paddle 3 has the ``ftrl`` kernel but no optimizer class; :class:`FTRL` is a ``paddle.optimizer.Optimizer``
(accumulators in its ``state_dict``, learning-rate schedulers, parameter groups, gradient clipping and
weight decay all work as for the built-in optimizers). Per coordinate, with gradient ``g``, learning rate
``alpha`` and ``lr_power`` ``p`` (-0.5 in the paper: per-coordinate rates ``alpha / (beta + sqrt(n))``)::

    n_new = n + g^2
    sigma = (n_new^(-p) - n^(-p)) / alpha
    z     = z + g - sigma * w
    n     = n_new
    w     = 0                                                 if |z| <= l1
          = -(z - sign(z) * l1) / ((beta + n^(-p)) / alpha + l2)   otherwise

L1 sets weights exactly to zero (the sparsity the paper is about). With ``beta = 0`` and ``l2 = 2 * l2'``
this is Paddle's (and TensorFlow's) ``ftrl`` kernel with ``l2'``.
"""
from __future__ import annotations

import paddle
from paddle.optimizer import Optimizer


class FTRL(Optimizer):
    _squared_acc_str = "squared"
    _linear_acc_str = "linear"

    def __init__(self, learning_rate=0.05, l1: float = 0.0, l2: float = 0.0, lr_power: float = -0.5,
                 beta: float = 1.0, initial_accumulator_value: float = 0.0, parameters=None, weight_decay=None,
                 grad_clip=None, name=None):
        if lr_power > 0:
            raise ValueError(f"FTRL: lr_power must be <= 0 (the paper: -0.5), got {lr_power}")
        if l1 < 0 or l2 < 0 or beta < 0 or initial_accumulator_value < 0:
            raise ValueError("FTRL: l1, l2, beta and initial_accumulator_value must be >= 0")
        super().__init__(learning_rate=learning_rate, parameters=parameters, weight_decay=weight_decay,
                         grad_clip=grad_clip, name=name)
        self.type = "ftrl_proximal"
        self._multi_precision = False
        self._master_weights = {}
        self._default_dict = {"l1": float(l1), "l2": float(l2), "lr_power": float(lr_power), "beta": float(beta),
                              "initial_accumulator_value": float(initial_accumulator_value)}
        self._hyper = dict(self._default_dict)

    def _create_accumulators(self, block, parameters):
        if isinstance(parameters, dict):
            parameters = self._update_param_group(parameters)
        for p in parameters:
            if p.name in self._already_create_accumulator:
                continue
            self._add_accumulator(self._squared_acc_str, p, fill_value=self._hyper["initial_accumulator_value"])
            self._add_accumulator(self._linear_acc_str, p, fill_value=0.0)
            self._already_create_accumulator.add(p.name)

    def _update_param_group(self, parameters):
        self._hyper = {k: float(parameters.get(k, v)) for k, v in self._default_dict.items()}
        return parameters.get("params")

    def _append_optimize_op(self, block, param_and_grad):
        if isinstance(param_and_grad, dict):
            param_and_grad = self._update_param_group(param_and_grad)
        param, grad = param_and_grad
        if grad.is_selected_rows():
            raise TypeError(f"FTRL: parameter {param.name} has a sparse (SelectedRows) gradient; use dense "
                            f"gradients (paddle.nn.Embedding(..., sparse=False))")
        h = self._hyper
        n = self._get_accumulator_master(self._squared_acc_str, param)
        z = self._get_accumulator_master(self._linear_acc_str, param)
        alpha = self._create_param_lr(param_and_grad)
        g = grad.astype(param.dtype)
        n_new = n + g * g
        if h["lr_power"] == -0.5:
            root_new, root_old = paddle.sqrt(n_new), paddle.sqrt(n)
        else:
            root_new, root_old = paddle.pow(n_new, -h["lr_power"]), paddle.pow(n, -h["lr_power"])
        sigma = (root_new - root_old) / alpha
        z_new = z + g - sigma * param
        denom = (h["beta"] + root_new) / alpha + h["l2"]
        shrunk = paddle.sign(z_new) * paddle.clip(paddle.abs(z_new) - h["l1"], min=0.0)
        w_new = -shrunk / denom
        paddle.assign(n_new, output=n)
        paddle.assign(z_new, output=z)
        paddle.assign(w_new, output=param)
        return None




class PlateauScale(paddle.optimizer.lr.LRScheduler):
    """FuxiCTR's ``reduce_lr_on_plateau``: the learning rate (a float, or another scheduler's value) times a
    scale that is multiplied by ``factor`` after every evaluation whose monitored metric did not improve
    (never below ``min_lr``). The Trainer steps it once per optimizer step like any scheduler; the rec task
    reports each validation result to :meth:`observe` (from ``compute_metrics``). Its state (scale, best)
    is saved in checkpoints with the other scheduler state."""

    def __init__(self, inner, factor: float = 0.1, min_lr: float = 1e-6, mode: str = "max"):
        if not 0 < factor < 1:
            raise ValueError(f"Optimizer.reduce_on_plateau: factor must be in (0, 1), got {factor}")
        self.inner = inner
        self.factor, self.min_lr, self.mode = float(factor), float(min_lr), mode
        self.scale, self.best, self.num_decays = 1.0, None, 0
        self._started = False  # the base class steps once in __init__: the inner scheduler already did
        base = inner.last_lr if isinstance(inner, paddle.optimizer.lr.LRScheduler) else float(inner)
        super().__init__(base)
        self._started = True

    def _inner_lr(self) -> float:
        return self.inner.last_lr if isinstance(self.inner, paddle.optimizer.lr.LRScheduler) else float(self.inner)

    def get_lr(self) -> float:
        lr = self._inner_lr()
        return max(lr * self.scale, min(self.min_lr, lr))

    def step(self, epoch=None):
        if self._started and isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            self.inner.step()
        super().step(epoch)

    def observe(self, value: float) -> bool:
        """Report an evaluation; returns True when the learning rate was reduced."""
        if value is None or value != value:  # NaN: not an improvement
            improved = False
        elif self.best is None:
            improved = True
        else:
            improved = value > self.best if self.mode == "max" else value < self.best
        if improved:
            self.best = float(value)
            return False
        self.scale *= self.factor
        self.num_decays += 1
        self.last_lr = self.get_lr()
        return True

    def state_keys(self):
        self.keys = ["last_epoch", "last_lr", "scale", "best", "num_decays"]

    def state_dict(self):
        d = super().state_dict()
        if isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            d["inner"] = self.inner.state_dict()
        return d

    def set_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        inner = state_dict.pop("inner", None)
        super().set_state_dict(state_dict)
        if inner is not None and isinstance(self.inner, paddle.optimizer.lr.LRScheduler):
            self.inner.set_state_dict(inner)

    set_dict = set_state_dict
