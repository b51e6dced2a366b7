"""Field-aware Factorization Machine (Juan et al., 2016).

Every feature has one latent vector per field; the pair ``(i, j)`` interacts through the vector of
``i`` for ``j``'s field and the vector of ``j`` for ``i``'s field:
``logit = b + sum_i w_i + sum_{i<j} <v_{i,f_j}, v_{j,f_i}>``.
"""
from __future__ import annotations

from .layers import CTRModel, FieldAwareEmbedding, LinearLogit, register_model, small_config


class FFM(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.linear = LinearLogit(layout, self.init_std)
        self.embedding = FieldAwareEmbedding(layout, self.embedding_dim, self.init_std)

    def logit(self, ids, values=None):
        pairs = self.embedding.pair_products(self.embedding(ids, values))  # [B, F(F-1)/2, D]
        return self.linear(ids, values) + pairs.sum(axis=[1, 2])


@register_model("ffm", family="rec", small_config=small_config())
def build_ffm(cfg, layout) -> FFM:
    return FFM(layout, cfg["Arch"])
