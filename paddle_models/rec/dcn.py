"""Deep & Cross Network (Wang et al., 2017).

The cross network applies ``x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l`` (``x_l . w_l`` a scalar per
sample) ``Arch.num_cross_layers`` times to the concatenated embeddings ``x_0``; a DNN runs in parallel
on ``x_0``; ``logit = w . [x_L, DNN(x_0)] + b``.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from .layers import CTRModel, FeatureEmbedding, mlp_from_arch, register_model, small_config, xavier_linear


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
        for w, b in zip(self.w, self.b):
            x = x0 * paddle.matmul(x, w) + b + x
        return x


class DCN(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        d = self.mlp_input_dim()
        self.embedding = FeatureEmbedding(layout, self.embedding_dim, self.init_std)
        self.cross = CrossNet(d, int(arch["num_cross_layers"]))
        self.dnn = mlp_from_arch(arch, d, output_dim=None) if arch["hidden_units"] else None
        self.out = xavier_linear(d + (self.dnn.output_dim if self.dnn is not None else 0), 1)

    def logit(self, ids, values=None):
        x0 = self.embedding(ids, values).flatten(1)
        parts = [self.cross(x0)] + ([self.dnn(x0)] if self.dnn is not None else [])
        return self.out(paddle.concat(parts, axis=1) if len(parts) > 1 else parts[0]).squeeze(-1)


@register_model("dcn", family="rec", small_config=small_config({"num_cross_layers": 2}))
def build_dcn(cfg, layout) -> DCN:
    return DCN(layout, cfg["Arch"])
