"""Wide & Deep (Cheng et al., 2016) as the paper trains it.

The wide part is a linear model over the sparse features and the cross-product transformations of
``Data.crosses`` (e.g. ``[[user, item]]``: one weight per (user, item) pair seen in training); the
deep part is a DNN over the embeddings. ``logit = wide(x) + deep(x)``. The paper trains the wide part
with FTRL-Proximal (L1) and the deep part with AdaGrad, both on every step: ``wide_parameters()`` /
``deep_parameters()`` split the weights and the rec task gives each part its own optimizer
(``Optimizer.wide`` for FTRL, the ``Optimizer`` section for the deep part).
"""
from __future__ import annotations

from .layers import (CTRModel, FeatureEmbedding, LinearLogit, mlp_from_arch, register_model,
                     small_config)


class WideDeep(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.wide = LinearLogit(layout, self.init_std)
        self.embedding = FeatureEmbedding(layout, self.embedding_dim, self.init_std)
        self.dnn = mlp_from_arch(arch, self.mlp_input_dim())

    def logit(self, ids, values=None):
        deep = self.dnn(self.embedding(ids, values).flatten(1)).squeeze(-1)
        return self.wide(ids, values) + deep

    def wide_parameters(self):
        return list(self.wide.parameters())

    def deep_parameters(self):
        wide = {id(p) for p in self.wide_parameters()}
        return [p for p in self.parameters() if id(p) not in wide]


@register_model("widedeep", family="rec",
                small_config=small_config(data={"crosses": [["c0", "c1"]]}))
def build_widedeep(cfg, layout) -> WideDeep:
    return WideDeep(layout, cfg["Arch"])
