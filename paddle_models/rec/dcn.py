"""Deep & Cross Network (Wang et al., 2017).

The cross network applies ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l`` (``x_l . w_l`` a scalar per
sample) ``Arch.num_cross_layers`` times to the concatenated embeddings ``x_0``; a DNN runs in parallel
on ``x_0``; ``logit = w . [x_L, DNN(x_0)] + b``.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from .layers import MLP, CTRModel, FeatureEmbedding, model_arguments, register_rec_model, small_config, xavier_linear


class CrossNet(nn.Layer):
    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.w = nn.ParameterList([self.create_parameter([dim, 1], default_initializer=nn.initializer.XavierNormal())
                                   for _ in range(num_layers)])
        self.b = nn.ParameterList([self.create_parameter([dim], is_bias=True,
                                                         default_initializer=nn.initializer.Constant(0.0))
                                   for _ in range(num_layers)])

    def forward(self, x0):
        x = x0
        for w, b in zip(self.w, self.b):  # noqa: B905 (paddle.jit's dy2static rejects zip(strict=))
            x = x0 * paddle.matmul(x, w) + b + x
        return x


class DCN(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool, num_cross_layers: int):
        super().__init__(layout)
        width = layout.num_fields * embedding_dim
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)
        self.cross = CrossNet(width, num_cross_layers)
        self.dnn = MLP(width, hidden_units, hidden_activation, net_dropout, batch_norm) if hidden_units else None
        self.out = xavier_linear(width + (self.dnn.output_dim if self.dnn is not None else 0), 1)

    def logit(self, ids, values=None):
        x0 = self.embedding(ids, values).flatten(1)
        parts = [self.cross(x0)] + ([self.dnn(x0)] if self.dnn is not None else [])
        return self.out(paddle.concat(parts, axis=1) if len(parts) > 1 else parts[0]).squeeze(-1)


@register_rec_model("dcn", DCN, small_config({"embedding_dim": 4, "hidden_units": [16, 16], "num_cross_layers": 2}))
def build_dcn(cfg, layout) -> DCN:
    return DCN(layout, **model_arguments(cfg, DCN))
