"""Logistic regression: the baseline every CTR table starts with.

``logit = b + sum_i w[x_i] (+ sum_j w_j x_j for dense features)``.
"""
from __future__ import annotations

from .layers import CTRModel, LinearLogit, model_arguments, register_rec_model, small_config


class LR(CTRModel):
    def __init__(self, layout, *, embedding_init_std: float):
        super().__init__(layout)
        self.linear = LinearLogit(layout, embedding_init_std)

    def logit(self, ids, values=None):
        return self.linear(ids, values)


@register_rec_model("lr", LR, small_config())
def build_lr(cfg, layout) -> LR:
    return LR(layout, **model_arguments(cfg, LR))
