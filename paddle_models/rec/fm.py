"""Factorization Machine (Rendle, 2010).

``logit = b + sum_i w_i + sum_{i<j} <v_i, v_j>`` with the pairwise sum computed in O(F*D) as
``0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``.
"""
from __future__ import annotations

from .layers import (
    CTRModel,
    FeatureEmbedding,
    LinearLogit,
    fm_interaction,
    model_arguments,
    register_rec_model,
    small_config,
)


class FM(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float):
        super().__init__(layout)
        self.linear = LinearLogit(layout, embedding_init_std)
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)

    def logit(self, ids, values=None):
        return self.linear(ids, values) + fm_interaction(self.embedding(ids, values))


@register_rec_model("fm", FM, small_config({"embedding_dim": 4}))
def build_fm(cfg, layout) -> FM:
    return FM(layout, **model_arguments(cfg, FM))
