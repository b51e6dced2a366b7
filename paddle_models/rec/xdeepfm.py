"""xDeepFM (Lian et al., 2018): linear part + Compressed Interaction Network + DNN.

CIN layer ``k`` forms all Hadamard products of its input maps ``X^{k-1}`` (``H_{k-1}`` maps) with the
field embeddings ``X^0`` (``m`` maps) and compresses them with a 1x1 convolution into ``H_k`` maps:
``X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j)``. Every layer's maps are sum-pooled over the
embedding dimension and concatenated into the CIN output (with ``Arch.cin_split_half``, the paper's
choice, half of a layer's maps go to the output and half to the next layer).
``logit = linear + w_cin . p_cin + DNN(concat_i v_i)``.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from .layers import (
    MLP,
    CTRModel,
    FeatureEmbedding,
    LinearLogit,
    model_arguments,
    register_rec_model,
    small_config,
    xavier_linear,
)


class CIN(nn.Layer):
    """The Compressed Interaction Network. Computed per (sample, embedding dimension) row: with
    ``x0`` as ``[B*D, m]`` and a layer's input as ``[B*D, H]``, the Hadamard products of all map pairs are
    one batched outer product ``[B*D, H, m]`` (a matmul: Paddle's CPU broadcasting multiply is 3x slower)
    and the 1x1 convolution is a matmul with ``[H*m, H_k]``."""

    def __init__(self, num_fields: int, layer_units, split_half: bool = False):
        super().__init__()
        self.split_half = bool(split_half)
        self.num_fields = int(num_fields)
        self.convs = nn.LayerList()
        h_prev, out_dim = num_fields, 0
        units = [int(u) for u in layer_units]
        for k, h in enumerate(units):
            split = self.split_half and k < len(units) - 1
            if split and h % 2:
                raise ValueError(f"Arch.cin_layer_units: {h} must be even with cin_split_half")
            self.convs.append(xavier_linear(h_prev * num_fields, h))  # the 1x1 convolution
            nxt = h // 2 if split else h
            out_dim += h - nxt if split else h
            h_prev = nxt
        self.output_dim = out_dim

    def forward(self, x0):  # [B, m, D]
        m, D = x0.shape[1], x0.shape[2]
        rows = x0.transpose([0, 2, 1]).reshape([-1, m])              # [B*D, m]
        xk, pooled = rows, []
        for k, conv in enumerate(self.convs):
            z = paddle.matmul(xk.unsqueeze(-1), rows.unsqueeze(1))   # [B*D, H, m]: X^{k-1}_h * X^0_j
            h = conv(z.reshape([-1, xk.shape[1] * m]))               # [B*D, H_k]
            if self.split_half and k < len(self.convs) - 1:
                half = h.shape[1] // 2
                xk, out = h[:, :half], h[:, half:]
            else:
                xk, out = h, h
            pooled.append(out.reshape([-1, D, out.shape[1]]).sum(axis=1))  # sum over the embedding dimension
        return paddle.concat(pooled, axis=1)


class XDeepFM(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool, cin_layer_units: list,
                 cin_split_half: bool):
        super().__init__(layout)
        self.linear = LinearLogit(layout, embedding_init_std)
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)
        self.cin = CIN(layout.num_fields, cin_layer_units, cin_split_half)
        self.cin_out = xavier_linear(self.cin.output_dim, 1)
        self.dnn = MLP(layout.num_fields * embedding_dim, hidden_units, hidden_activation, net_dropout, batch_norm,
                       output_dim=1) if hidden_units else None

    def logit(self, ids, values=None):
        emb = self.embedding(ids, values)
        out = self.linear(ids, values) + self.cin_out(self.cin(emb)).squeeze(-1)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(1)).squeeze(-1)
        return out


@register_rec_model("xdeepfm", XDeepFM, small_config({"embedding_dim": 4, "hidden_units": [16, 16],
                                                     "cin_layer_units": [6, 6]}))
def build_xdeepfm(cfg, layout) -> XDeepFM:
    return XDeepFM(layout, **model_arguments(cfg, XDeepFM))
