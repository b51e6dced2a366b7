"""DeepFM (Guo et al., 2017): an FM and a DNN sharing one embedding layer.

``logit = FM(x) + DNN(concat_i v_i)``, where FM is the first-order part plus the pairwise term.
"""
from __future__ import annotations

from .layers import (
    MLP,
    CTRModel,
    FeatureEmbedding,
    LinearLogit,
    fm_interaction,
    model_arguments,
    register_rec_model,
    small_config,
)


class DeepFM(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool):
        super().__init__(layout)
        self.linear = LinearLogit(layout, embedding_init_std)
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)
        self.dnn = MLP(layout.num_fields * embedding_dim, hidden_units, hidden_activation, net_dropout, batch_norm,
                       output_dim=1)

    def logit(self, ids, values=None):
        emb = self.embedding(ids, values)
        fm = self.linear(ids, values) + fm_interaction(emb)
        return fm + self.dnn(emb.flatten(1)).squeeze(-1)


@register_rec_model("deepfm", DeepFM, small_config({"embedding_dim": 4, "hidden_units": [16, 16]}))
def build_deepfm(cfg, layout) -> DeepFM:
    return DeepFM(layout, **model_arguments(cfg, DeepFM))
