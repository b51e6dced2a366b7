"""DeepFFM: field-aware interactions feeding a DNN (the operation-aware network, ONN / NFFM, Yang et
al., 2019).

Every feature has one embedding per field. The DNN reads each feature's own-field vector (the "copy"
operation) and, for every pair of fields ``i < j``, the field-aware product ``v_{i,f_j} * v_{j,f_i}``
(element-wise, ``Arch.deepffm_interaction: hadamard``; or its sum, ``inner``).
``logit = b + sum_i w_i + DNN([copies, products])``.
"""
from __future__ import annotations

import paddle

from .layers import (CTRModel, FieldAwareEmbedding, LinearLogit, mlp_from_arch, register_model,
                     small_config)


class DeepFFM(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.interaction = arch["deepffm_interaction"]
        if self.interaction not in ("hadamard", "inner"):
            raise ValueError(f"Arch.deepffm_interaction: {self.interaction!r} (hadamard, inner)")
        F_, D = layout.num_fields, self.embedding_dim
        n_pairs = F_ * (F_ - 1) // 2
        self.linear = LinearLogit(layout, self.init_std)
        self.embedding = FieldAwareEmbedding(layout, D, self.init_std)
        in_dim = F_ * D + (n_pairs * D if self.interaction == "hadamard" else n_pairs)
        self.dnn = mlp_from_arch(arch, in_dim)

    def logit(self, ids, values=None):
        flat = self.embedding(ids, values)
        pairs = self.embedding.pair_products(flat)
        pairs = pairs.flatten(1) if self.interaction == "hadamard" else pairs.sum(axis=-1)
        x = [self.embedding.own(flat).flatten(1), pairs]
        return self.linear(ids, values) + self.dnn(paddle.concat(x, axis=1)).squeeze(-1)


@register_model("deepffm", family="rec", small_config=small_config())
def build_deepffm(cfg, layout) -> DeepFFM:
    return DeepFFM(layout, cfg["Arch"])
