"""Field-aware Factorization Machine (Juan et al., 2016).

Every feature has one latent vector per field; the pair ``(i, j)`` interacts through the vector of
``i`` for ``j``'s field and the vector of ``j`` for ``i``'s field:
``logit = b + sum_i w_i + sum_{i<j} <v_{i,f_j}, v_{j,f_i}>``.
"""
from __future__ import annotations

from .layers import CTRModel, FieldAwareEmbedding, LinearLogit, model_arguments, register_rec_model, small_config


class FFM(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float):
        super().__init__(layout)
        self.linear = LinearLogit(layout, embedding_init_std)
        self.embedding = FieldAwareEmbedding(layout, embedding_dim, embedding_init_std)

    def logit(self, ids, values=None):
        pairs = self.embedding.pair_products(self.embedding(ids, values))  # [B, F(F-1)/2, D]
        return self.linear(ids, values) + pairs.sum(axis=[1, 2])


@register_rec_model("ffm", FFM, small_config({"embedding_dim": 4}))
def build_ffm(cfg, layout) -> FFM:
    return FFM(layout, **model_arguments(cfg, FFM))
