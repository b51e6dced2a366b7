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

from .layers import MLP, CTRModel, FeatureEmbedding, model_arguments, register_rec_model, small_config, xavier_linear

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
        E, r = int(num_experts), int(low_rank)

        def weights(shape):
            return nn.ParameterList([self.create_parameter(shape, default_initializer=nn.initializer.XavierNormal())
                                     for _ in range(num_layers)])

        self.V, self.C, self.U = weights([E, dim, r]), weights([E, r, r]), weights([E, r, dim])
        self.b = nn.ParameterList([self.create_parameter([dim], is_bias=True,
                                                         default_initializer=nn.initializer.Constant(0.0))
                                   for _ in range(num_layers)])
        self.gate = nn.LayerList([xavier_linear(dim, E, bias=False) for _ in range(num_layers)])

    def forward(self, x0):
        x = x0
        for V, C, U, b, gate in zip(self.V, self.C, self.U, self.b, self.gate):  # noqa: B905 (dy2static rejects strict=)
            v = paddle.tanh(paddle.einsum("bd,edr->ber", x, V))       # [B, E, r]
            v = paddle.tanh(paddle.einsum("ber,ers->bes", v, C))
            uv = paddle.einsum("ber,erd->bed", v, U) + b              # [B, E, d]
            experts = x0.unsqueeze(1) * uv
            g = F.softmax(gate(x), axis=-1).unsqueeze(-1)             # [B, E, 1]
            x = (experts * g).sum(axis=1) + x
        return x


class DCNv2(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool, num_cross_layers: int,
                 model_structure: str, use_low_rank_mixture: bool, low_rank: int, num_experts: int):
        super().__init__(layout)
        if model_structure not in STRUCTURES:
            raise ValueError(f"Arch.model_structure: {model_structure!r} ({', '.join(STRUCTURES)})")
        self.structure = model_structure
        width = layout.num_fields * embedding_dim
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)
        self.cross = CrossNetMix(width, num_cross_layers, low_rank, num_experts) if use_low_rank_mixture \
            else CrossNetV2(width, num_cross_layers)

        def dnn():
            return MLP(width, hidden_units, hidden_activation, net_dropout, batch_norm)

        if model_structure == "crossnet_only":
            out_dim = width
        else:
            self.dnn = dnn()
            if model_structure == "stacked_parallel":
                self.parallel_dnn = dnn()
                out_dim = self.dnn.output_dim + self.parallel_dnn.output_dim
            elif model_structure == "parallel":
                out_dim = width + self.dnn.output_dim
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


@register_rec_model("dcnv2", DCNv2, small_config({"embedding_dim": 4, "hidden_units": [16, 16], "num_cross_layers": 2,
                                                 "low_rank": 4, "num_experts": 2}))
def build_dcnv2(cfg, layout) -> DCNv2:
    return DCNv2(layout, **model_arguments(cfg, DCNv2))
