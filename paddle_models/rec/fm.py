"""Factorization Machine (Rendle, 2010).

``logit = b + sum_i w_i + sum_{i<j} <v_i, v_j>`` with the pairwise sum computed in O(F*D) as
``0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)``.
"""
from __future__ import annotations

from .layers import CTRModel, FeatureEmbedding, LinearLogit, fm_interaction, register_model, small_config


class FM(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.linear = LinearLogit(layout, self.init_std)
        self.embedding = FeatureEmbedding(layout, self.embedding_dim, self.init_std)

    def logit(self, ids, values=None):
        return self.linear(ids, values) + fm_interaction(self.embedding(ids, values))


@register_model("fm", family="rec", small_config=small_config())
def build_fm(cfg, layout) -> FM:
    return FM(layout, cfg["Arch"])
