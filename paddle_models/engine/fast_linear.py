"""A faster backward for ``paddle.nn.Linear`` in dygraph training on CPU.

Paddle 3.3 computes the bias gradient of ``matmul(x, W) + b`` with a single-threaded broadcast
reduction, which for large activations costs more than the two GEMMs of the same backward. Here the
same three gradients are GEMMs:

    dx = dy @ W^T,   dW = x^T @ dy,   db = 1^T @ dy

(``db`` as a GEMV over a ones vector; the README's speed section has the measurement). Same function,
same gradients up to float summation order (tested against paddle's own Linear to 1e-5). Gradients that
are not needed (``stop_gradient`` inputs: a frozen layer, the first layer's input) are not computed.

``use_fast_linear_grad(model)`` switches every ``paddle.nn.Linear`` of a model (the instances keep
their class, names and printed form, so ``tools/compare_arch.py`` sees the same network); the fast path
runs only in dygraph while the layer is training. Eval, ``paddle.jit.to_static`` and export use the
layer's own forward. ``Global.fast_linear_grad: false`` turns it off.
"""
from __future__ import annotations

import types

import paddle
from paddle.autograd import PyLayer


class _LinearGrad(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient, bias is not None and not bias.stop_gradient)
        ctx.has_bias = bias is not None
        y = paddle.matmul(x, weight)
        return y + bias if bias is not None else y

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensor()
        need_x, need_w, need_b = ctx.needs
        k, n = weight.shape
        dy2 = dy.reshape([-1, n])
        dx = paddle.matmul(dy, weight, transpose_y=True) if need_x else None
        dw = paddle.matmul(x.reshape([-1, k]), dy2, transpose_x=True) if need_w else None
        if not ctx.has_bias:
            return dx, dw
        db = paddle.matmul(paddle.ones([1, dy2.shape[0]], dy2.dtype), dy2).reshape([n]) if need_b else None
        return dx, dw, db


def linear_with_fast_grad(x, weight, bias=None):
    """``paddle.nn.functional.linear`` with the backward above (dygraph only)."""
    return _LinearGrad.apply(x, weight, bias)


def _fast_forward(self, x):
    if self.training and paddle.in_dynamic_mode() and paddle.is_grad_enabled():
        return _LinearGrad.apply(x, self.weight, self.bias)
    return paddle.nn.functional.linear(x, self.weight, self.bias, name=self.name)


def use_fast_linear_grad(model: paddle.nn.Layer, enable: bool = True) -> int:
    """Give (or, with ``enable=False``, take back) the fast backward to every ``paddle.nn.Linear`` of
    ``model``; returns how many layers were switched."""
    n = 0
    for layer in [model] + list(model.sublayers()):
        if type(layer) is not paddle.nn.Linear:  # exact type: a subclass may have its own forward
            continue
        if enable:
            layer.forward = types.MethodType(_fast_forward, layer)
        else:
            layer.__dict__.pop("forward", None)
        n += 1
    return n
