"""DeepFFM: field-aware interactions feeding a DNN (the operation-aware network, ONN / NFFM, Yang et
al., 2019).

Every feature has one embedding per field. The DNN reads each feature's own-field vector (the "copy"
operation) and, for every pair of fields ``i < j``, the field-aware product ``v_{i,f_j} * v_{j,f_i}``
(element-wise, ``Arch.deepffm_interaction: hadamard``; or its sum, ``inner``).
``logit = b + sum_i w_i + DNN([copies, products])``.
"""
from __future__ import annotations

import paddle

from .layers import MLP, CTRModel, FieldAwareEmbedding, LinearLogit, model_arguments, register_rec_model, small_config

INTERACTIONS = ("hadamard", "inner")


class DeepFFM(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool, deepffm_interaction: str):
        super().__init__(layout)
        if deepffm_interaction not in INTERACTIONS:
            raise ValueError(f"Arch.deepffm_interaction: {deepffm_interaction!r} ({', '.join(INTERACTIONS)})")
        self.interaction = deepffm_interaction
        num_fields = layout.num_fields
        num_pairs = num_fields * (num_fields - 1) // 2
        self.linear = LinearLogit(layout, embedding_init_std)
        self.embedding = FieldAwareEmbedding(layout, embedding_dim, embedding_init_std)
        pair_width = num_pairs * embedding_dim if self.interaction == "hadamard" else num_pairs
        self.dnn = MLP(num_fields * embedding_dim + pair_width, hidden_units, hidden_activation, net_dropout,
                       batch_norm, output_dim=1)

    def logit(self, ids, values=None):
        flat = self.embedding(ids, values)
        pairs = self.embedding.pair_products(flat)
        pairs = pairs.flatten(1) if self.interaction == "hadamard" else pairs.sum(axis=-1)
        x = [self.embedding.own(flat).flatten(1), pairs]
        return self.linear(ids, values) + self.dnn(paddle.concat(x, axis=1)).squeeze(-1)


@register_rec_model("deepffm", DeepFFM, small_config({"embedding_dim": 4, "hidden_units": [16, 16]}))
def build_deepffm(cfg, layout) -> DeepFFM:
    return DeepFFM(layout, **model_arguments(cfg, DeepFFM))
