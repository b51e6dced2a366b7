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
from .layers import MLP, FeatureEmbedding, model_arguments, normal_attr, register_rec_model, small_config

SIMILARITIES = ("cosine", "dot")


class Tower(nn.Layer):
    """Embeddings of one side's features -> DNN -> ``[B, tower_units[-1]]`` (L2-normalised for cosine)."""

    def __init__(self, layout: Layout, shared_weight, embedding_dim: int, tower_units: list, hidden_activation: str,
                 net_dropout: float, batch_norm: bool, normalize: bool):
        super().__init__()
        units = [int(u) for u in tower_units]
        self.embedding = FeatureEmbedding(layout, embedding_dim)
        self.embedding.weight = shared_weight
        self.dnn = MLP(layout.num_fields * embedding_dim, units[:-1], hidden_activation, net_dropout, batch_norm,
                       units[-1])
        self.normalize = normalize

    def forward(self, ids):
        out = self.dnn(self.embedding(ids).flatten(1))
        return F.normalize(out, axis=-1) if self.normalize else out


def _check_layouts(user_layout: Layout, item_layout: Layout) -> None:
    for side, layout in (("user", user_layout), ("item", item_layout)):
        if layout.num_dense or layout.num_wide:
            raise ValueError(f"dssm: the {side} tower takes categorical and sequence features only "
                             f"(bucketize numeric features; no embed: false / crosses)")
        if layout.num_fields == 0:
            raise ValueError(f"dssm: no feature has tower: {side}")


class DSSM(nn.Layer):
    kind = "retrieval"
    input_names = ["user_ids", "item_ids"]

    def __init__(self, user_layout: Layout, item_layout: Layout, *, embedding_dim: int, embedding_init_std: float,
                 tower_units: list, hidden_activation: str, net_dropout: float, batch_norm: bool, similarity: str,
                 temperature: float):
        super().__init__()
        _check_layouts(user_layout, item_layout)
        if not tower_units:
            raise ValueError("Arch.tower_units: at least one layer (the output size)")
        if similarity not in SIMILARITIES:
            raise ValueError(f"Arch.similarity: {similarity!r} ({', '.join(SIMILARITIES)})")
        self.similarity = similarity
        self.temperature = float(temperature)
        weight = self.create_parameter([user_layout.vocab_size, embedding_dim], attr=normal_attr(embedding_init_std))
        tower = {"embedding_dim": embedding_dim, "tower_units": tower_units, "hidden_activation": hidden_activation,
                 "net_dropout": net_dropout, "batch_norm": batch_norm, "normalize": similarity == "cosine"}
        self.user_tower = Tower(user_layout, weight, **tower)
        self.item_tower = Tower(item_layout, weight, **tower)

    def forward(self, user_ids, item_ids, all_pairs: bool = False):
        """Score of each (user, item) row: similarity / temperature; with ``all_pairs`` the
        ``[n_users, n_items]`` matrix of every user against every item (the in-batch softmax logits)."""
        u, v = self.user_tower(user_ids), self.item_tower(item_ids)
        if all_pairs:
            return paddle.matmul(u, v, transpose_y=True) / self.temperature
        return (u * v).sum(axis=-1) / self.temperature

    def embedding_parameters(self):
        return [self.user_tower.embedding.weight]


@register_rec_model("dssm", DSSM, small_config(
    {"embedding_dim": 8, "tower_units": [16, 8], "temperature": 0.1},
    {"synthetic": {"rows": 512, "cardinalities": [64, 40], "numeric": 0, "sequence_len": 0, "seed": 0},
     "history_len": 4}))
def build_dssm(cfg, user_layout, item_layout) -> DSSM:
    return DSSM(user_layout, item_layout, **model_arguments(cfg, DSSM))
