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

:func:`paddle_models.engine.optim.build_optimizer` builds it with ``name="FTRL"`` from a section of its
settings (the rec family's ``Optimizer.wide``, for Wide&Deep's wide part).
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
