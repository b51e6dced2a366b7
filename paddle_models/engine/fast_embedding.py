"""A faster backward for large ``paddle.nn.Embedding`` tables in dygraph training on CPU.

The gradient of a dense embedding is a table of the weight's size that is zero except for the rows looked
up. Paddle 3.3 builds it in a freshly allocated tensor on every backward; for ERNIE-M's 250,002 x 768 word
table that is 768 MB of new pages to fault in and zero, about 0.4 s of every train step on 2 cores, for
768 looked-up rows. Here the same gradient is written into a table that is kept between steps: zeroed in
place (much cheaper than fresh pages) and the rows added with ``index_add_``. The result is the same tensor
(same values, exactly: the same additions in the same order per row; tested against paddle's own backward,
with padding rows, repeated ids and gradient accumulation).

Two tables are kept per layer and the one that is not the parameter's current ``.grad`` is used, because
paddle may make the returned tensor the ``.grad`` itself (after ``clear_grad`` with ``set_to_zero``); the
other one is never written while it is the gradient. Memory: one table beside the gradient (the fresh
tensor of paddle's path is gone instead).

``use_fast_embedding_grad(model)`` switches every ``paddle.nn.Embedding`` of a model with at least
``min_numel`` weights, dense gradient, no ``max_norm`` and no ``scale_grad_by_freq`` (the instances keep
their class and printed form); the fast path runs only in dygraph while the layer trains with its weight
trainable. ``Global.fast_embedding_grad: false`` turns it off.
"""
from __future__ import annotations

import types

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

MIN_NUMEL = 1 << 22  # 4M weights (16 MB): below it paddle's fresh tensor costs little


class _Tables:
    """The kept tables of one layer (a plain holder: PyLayer.apply inspects list arguments for tensors)."""

    __slots__ = ("items",)

    def __init__(self):
        self.items = []


class _EmbeddingGrad(PyLayer):
    @staticmethod
    def forward(ctx, ids, weight, padding_idx, tables):
        ctx.save_for_backward(ids)
        ctx.weight, ctx.padding_idx, ctx.tables = weight, padding_idx, tables
        return F.embedding(ids, weight, padding_idx=padding_idx)

    @staticmethod
    def backward(ctx, dy):
        (ids,) = ctx.saved_tensor()
        weight, tables = ctx.weight, ctx.tables
        rows, dim = weight.shape
        flat = ids.flatten()
        d = dy.reshape([-1, dim])
        if ctx.padding_idx is not None:  # the padding row gets no gradient
            d = d * (flat != ctx.padding_idx).astype(d.dtype).unsqueeze(1)
        grad = weight.grad
        busy = grad.data_ptr() if grad is not None and grad._is_initialized() else None
        # a table that became the gradient is released with it by clear_grad(set_to_zero=False)
        tables.items = [t for t in tables.items if t._is_initialized()]
        table = next((t for t in tables.items if t.data_ptr() != busy), None)
        if table is None:  # the first backward (and the second: the first table became the gradient)
            table = paddle.zeros([rows, dim], dy.dtype)
            tables.items.append(table)
        else:
            table.zero_()
        table.index_add_(flat, 0, d)
        return None, table


def _fast_forward(self, x):
    if self.training and paddle.in_dynamic_mode() and paddle.is_grad_enabled() and not self.weight.stop_gradient:
        return _EmbeddingGrad.apply(x, self.weight, self._fast_padding_idx, self._fast_grad_tables)
    return type(self).forward(self, x)


def use_fast_embedding_grad(model: paddle.nn.Layer, enable: bool = True, min_numel: int = MIN_NUMEL) -> int:
    """Give (or, with ``enable=False``, take back) the kept-table backward to every eligible
    ``paddle.nn.Embedding`` of ``model`` (see the module doc); returns how many layers were switched (or
    switched back)."""
    n = 0
    for layer in [model] + list(model.sublayers()):
        if type(layer) is not paddle.nn.Embedding:  # exact type: a subclass may have its own forward
            continue
        if not enable:
            n += layer.__dict__.pop("forward", None) is not None
            layer.__dict__.pop("_fast_grad_tables", None)
            continue
        if (layer._sparse or layer._max_norm is not None or getattr(layer, "_scale_grad_by_freq", False)
                or layer.weight.size < min_numel):
            continue
        p = layer._padding_idx
        layer._fast_padding_idx = None if p is None else (p + layer.weight.shape[0] if p < 0 else p)
        layer._fast_grad_tables = _Tables()
        layer.forward = types.MethodType(_fast_forward, layer)
        n += 1
    return n
