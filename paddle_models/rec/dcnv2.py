"""DCN-V2 (Wang et al., 2021): full-rank or low-rank mixture-of-experts cross layers.

Full rank: ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``. Low-rank mixture (``Arch.use_low_rank_mixture``):
``x_{l+1} = sum_e g_e(x_l) * (x_0 * (U_e tanh(C_e tanh(V_e^T x_l)) + b)) + x_l`` with ``num_experts``
experts of rank ``low_rank`` and softmax gates ``g(x_l)``. ``Arch.model_structure``:
``crossnet_only``, ``stacked`` (cross network then DNN), ``parallel`` (both on ``x_0``, concatenated)
or ``stacked_parallel`` (stacked and parallel outputs concatenated).
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .layers import CTRModel, FeatureEmbedding, mlp_from_arch, register_model, small_config, xavier_linear

STRUCTURES = ("crossnet_only", "stacked", "parallel", "stacked_parallel")


class CrossNetV2(nn.Layer):
    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.LayerList([xavier_linear(dim, dim) for _ in range(num_layers)])

    def forward(self, x0):
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x


class CrossNetMix(nn.Layer):
    """Low-rank mixture-of-experts cross layers; the experts of a layer run as one batched matmul."""

    def __init__(self, dim: int, num_layers: int, low_rank: int, num_experts: int):
        super().__init__()
        xn = nn.initializer.XavierNormal()
        E, r = int(num_experts), int(low_rank)
        self.V = nn.ParameterList([self.create_parameter([E, dim, r], default_initializer=xn) for _ in range(num_layers)])
        self.C = nn.ParameterList([self.create_parameter([E, r, r], default_initializer=xn) for _ in range(num_layers)])
        self.U = nn.ParameterList([self.create_parameter([E, r, dim], default_initializer=xn) for _ in range(num_layers)])
        self.b = nn.ParameterList([self.create_parameter([dim], is_bias=True, default_initializer=nn.initializer.Constant(0.0))
                                   for _ in range(num_layers)])
        self.gate = nn.LayerList([xavier_linear(dim, E, bias=False) for _ in range(num_layers)])

    def forward(self, x0):
        x = x0
        for V, C, U, b, gate in zip(self.V, self.C, self.U, self.b, self.gate):
            v = paddle.tanh(paddle.einsum("bd,edr->ber", x, V))       # [B, E, r]
            v = paddle.tanh(paddle.einsum("ber,ers->bes", v, C))
            uv = paddle.einsum("ber,erd->bed", v, U) + b              # [B, E, d]
            experts = x0.unsqueeze(1) * uv
            g = F.softmax(gate(x), axis=-1).unsqueeze(-1)             # [B, E, 1]
            x = (experts * g).sum(axis=1) + x
        return x


class DCNv2(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.structure = arch["model_structure"]
        if self.structure not in STRUCTURES:
            raise ValueError(f"Arch.model_structure: {self.structure!r} ({', '.join(STRUCTURES)})")
        d = self.mlp_input_dim()
        self.embedding = FeatureEmbedding(layout, self.embedding_dim, self.init_std)
        n = int(arch["num_cross_layers"])
        self.cross = CrossNetMix(d, n, arch["low_rank"], arch["num_experts"]) if arch["use_low_rank_mixture"] \
            else CrossNetV2(d, n)
        if self.structure == "crossnet_only":
            out_dim = d
        else:
            self.dnn = mlp_from_arch(arch, d, output_dim=None)
            if self.structure == "stacked_parallel":
                self.parallel_dnn = mlp_from_arch(arch, d, output_dim=None)
                out_dim = self.dnn.output_dim + self.parallel_dnn.output_dim
            elif self.structure == "parallel":
                out_dim = d + self.dnn.output_dim
            else:
                out_dim = self.dnn.output_dim
        self.out = xavier_linear(out_dim, 1)

    def logit(self, ids, values=None):
        x0 = self.embedding(ids, values).flatten(1)
        c = self.cross(x0)
        if self.structure == "crossnet_only":
            h = c
        elif self.structure == "stacked":
            h = self.dnn(c)
        elif self.structure == "parallel":
            h = paddle.concat([c, self.dnn(x0)], axis=1)
        else:
            h = paddle.concat([self.dnn(c), self.parallel_dnn(x0)], axis=1)
        return self.out(h).squeeze(-1)


@register_model("dcnv2", family="rec", small_config=small_config({"num_cross_layers": 2, "low_rank": 4,
                                                                    "num_experts": 2}))
def build_dcnv2(cfg, layout) -> DCNv2:
    return DCNv2(layout, cfg["Arch"])
