"""DSSM two-tower retrieval model (Huang et al., 2013; the YouTube / in-batch-softmax recipe).

A user tower and an item tower (embeddings of their features, concatenated, through a DNN) map users
and items into one space; the score is the cosine (or dot product) divided by a temperature. Training
uses in-batch softmax: the other items of a batch are a user's negatives (plus, optionally,
``Data.num_negatives`` items drawn from the catalogue; occurrences of the user's own positive item
among the negatives are masked). Both towers read one shared embedding table, so a user's history of
items uses the same item vectors as the item tower. The towers are separate sub-layers
(``user_tower(user_ids)``, ``item_tower(item_ids)``) so they can be exported and served apart: items
are embedded once offline, users at request time.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .features import Layout
from .layers import MLP, FeatureEmbedding, normal_attr, register_model, small_config


class Tower(nn.Layer):
    """Embeddings of one side's features -> DNN -> ``[B, tower_units[-1]]`` (L2-normalised for cosine)."""

    def __init__(self, layout: Layout, shared_weight, arch, normalize: bool):
        super().__init__()
        units = [int(u) for u in arch["tower_units"]]
        self.embedding = FeatureEmbedding(layout, int(arch["embedding_dim"]))
        self.embedding.weight = shared_weight
        self.dnn = MLP(layout.num_fields * int(arch["embedding_dim"]), units[:-1], arch["hidden_activation"],
                       float(arch["net_dropout"]), bool(arch["batch_norm"]), units[-1])
        self.normalize = normalize

    def forward(self, ids):
        out = self.dnn(self.embedding(ids).flatten(1))
        return F.normalize(out, axis=-1) if self.normalize else out


class DSSM(nn.Layer):
    kind = "retrieval"
    input_names = ["user_ids", "item_ids"]

    def __init__(self, user_layout: Layout, item_layout: Layout, arch):
        super().__init__()
        for side, lay in (("user", user_layout), ("item", item_layout)):
            if lay.num_dense or lay.num_wide:
                raise ValueError(f"dssm: the {side} tower takes categorical and sequence features only "
                                 f"(bucketize numeric features; no embed: false / crosses)")
            if lay.num_fields == 0:
                raise ValueError(f"dssm: no feature has tower: {side}")
        if not arch["tower_units"]:
            raise ValueError("Arch.tower_units: at least one layer (the output size)")
        self.similarity = arch["similarity"]
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"Arch.similarity: {self.similarity!r} (cosine, dot)")
        self.temperature = float(arch["temperature"])
        weight = self.create_parameter([user_layout.vocab_size, int(arch["embedding_dim"])],
                                       attr=normal_attr(float(arch["embedding_init_std"])))
        cos = self.similarity == "cosine"
        self.user_tower = Tower(user_layout, weight, arch, cos)
        self.item_tower = Tower(item_layout, weight, arch, cos)

    def forward(self, user_ids, item_ids, all_pairs: bool = False):
        """Score of each (user, item) row: similarity / temperature; with ``all_pairs`` the
        ``[n_users, n_items]`` matrix of every user against every item (the in-batch softmax logits)."""
        u, v = self.user_tower(user_ids), self.item_tower(item_ids)
        if all_pairs:
            return paddle.matmul(u, v, transpose_y=True) / self.temperature
        return (u * v).sum(axis=-1) / self.temperature

    def embedding_parameters(self):
        return [self.user_tower.embedding.weight]


@register_model("dssm", family="rec", small_config=small_config(
    {"embedding_dim": 8, "tower_units": [16, 8], "temperature": 0.1},
    {"synthetic": {"rows": 512, "cardinalities": [64, 40], "numeric": 0, "sequence_len": 0, "seed": 0},
     "history_len": 4}))
def build_dssm(cfg, user_layout, item_layout) -> DSSM:
    return DSSM(user_layout, item_layout, cfg["Arch"])


build_dssm.kind = "retrieval"
