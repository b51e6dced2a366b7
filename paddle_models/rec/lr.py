"""Logistic regression: the baseline every CTR table starts with.

``logit = b + sum_i w[x_i] (+ sum_j w_j x_j for dense features)``.
"""
from __future__ import annotations

from .layers import CTRModel, LinearLogit, register_model, small_config


class LR(CTRModel):
    def __init__(self, layout, arch):
        super().__init__(layout, arch)
        self.linear = LinearLogit(layout, self.init_std)

    def logit(self, ids, values=None):
        return self.linear(ids, values)


@register_model("lr", family="rec", small_config=small_config())
def build_lr(cfg, layout) -> LR:
    return LR(layout, cfg["Arch"])
