"""DeepFM (Guo et al., 2017): an FM and a DNN sharing one embedding layer.

``logit = FM(x) + DNN(concat_i v_i)``, where FM is the first-order part plus the pairwise term.
"""
from __future__ import annotations

from .layers import (CTRModel, FeatureEmbedding, LinearLogit, fm_interaction, mlp_from_arch,
                     register_model, small_config)


class DeepFM(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.linear = LinearLogit(layout, self.init_std)
        self.embedding = FeatureEmbedding(layout, self.embedding_dim, self.init_std)
        self.dnn = mlp_from_arch(arch, self.mlp_input_dim())

    def logit(self, ids, values=None):
        emb = self.embedding(ids, values)
        fm = self.linear(ids, values) + fm_interaction(emb)
        return fm + self.dnn(emb.flatten(1)).squeeze(-1)


@register_model("deepfm", family="rec", small_config=small_config())
def build_deepfm(cfg, layout) -> DeepFM:
    return DeepFM(layout, cfg["Arch"])
