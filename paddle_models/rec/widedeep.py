"""Wide & Deep (Cheng et al., 2016) as the paper trains it.

The wide part is a linear model over the sparse features and the cross-product transformations of
``Data.crosses`` (e.g. ``[[user, item]]``: one weight per (user, item) pair seen in training); the
deep part is a DNN over the embeddings. ``logit = wide(x) + deep(x)``. The paper trains the wide part
with FTRL-Proximal (L1) and the deep part with AdaGrad, both on every step: ``wide_parameters()`` /
``deep_parameters()`` split the weights and the rec task gives each part its own optimizer
(``Optimizer.wide`` for FTRL, the ``Optimizer`` section for the deep part).
"""
from __future__ import annotations

from .layers import MLP, CTRModel, FeatureEmbedding, LinearLogit, model_arguments, register_rec_model, small_config


class WideDeep(CTRModel):
    def __init__(self, layout, *, embedding_dim: int, embedding_init_std: float, hidden_units: list,
                 hidden_activation: str, net_dropout: float, batch_norm: bool):
        super().__init__(layout)
        self.wide = LinearLogit(layout, embedding_init_std)
        self.embedding = FeatureEmbedding(layout, embedding_dim, embedding_init_std)
        self.dnn = MLP(layout.num_fields * embedding_dim, hidden_units, hidden_activation, net_dropout, batch_norm,
                       output_dim=1)

    def logit(self, ids, values=None):
        deep = self.dnn(self.embedding(ids, values).flatten(1)).squeeze(-1)
        return self.wide(ids, values) + deep

    def wide_parameters(self):
        return list(self.wide.parameters())

    def deep_parameters(self):
        wide = {id(p) for p in self.wide_parameters()}
        return [p for p in self.parameters() if id(p) not in wide]


@register_rec_model("widedeep", WideDeep, small_config({"embedding_dim": 4, "hidden_units": [16, 16]},
                                                      data={"crosses": [["c0", "c1"]]}))
def build_widedeep(cfg, layout) -> WideDeep:
    return WideDeep(layout, **model_arguments(cfg, WideDeep))
