"""Layers shared by several recommender models: embeddings, the linear (first-order) part, the DNN,
the FM and field-aware (FFM) interactions, and the base class of the CTR models.

Inputs of every CTR model are the two arrays a :class:`~paddle_models.rec.features.FeatureMap` writes:
``ids`` (int64 ``[B, n_id_cols]``, rows of one shared table) and, when the data has dense numeric
features, ``values`` (float32 ``[B, n_dense]``). ``forward`` returns the click probability; ``logit``
the value before the sigmoid (training uses it with a numerically stable loss).

A model's hyperparameters are the keyword-only arguments of its constructor, without defaults (those are in
``defaults/rec.yaml``). :func:`register_rec_model` registers its builder with those ``Arch`` keys, and the
builder passes exactly them (:func:`model_arguments`); a config that sets another ``Arch`` key is an error.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..registry import register_model
from .features import Layout

log = logging.getLogger("paddle_models")

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def normal_attr(std: float):
    return paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, std))


def xavier_linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
    """A Linear layer with Xavier-normal weights and zero bias (FuxiCTR's default initialisation)."""
    return nn.Linear(n_in, n_out, weight_attr=paddle.ParamAttr(initializer=nn.initializer.XavierNormal()),
                     bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)) if bias else False)


class FeatureEmbedding(nn.Layer):
    """``[B, num_fields, dim]``: one vector per embedded categorical feature, per sequence feature
    (masked mean or sum of its ids) and per dense feature (value times a learned vector).

    All ids index one table (row 0 = padding), so a batch is one lookup. The table has
    ``layout.embed_rows`` rows: the shared id space without the rows of linear-only features (crosses,
    ``embed: false``) that come after the embedded ones and that no embedding reads, so the dense gradient,
    weight decay and optimizer update of every step skip them (outputs and the updates of the rows that
    are read do not change).
    """

    def __init__(self, layout: Layout, dim: int, init_std: float = 1e-4):
        super().__init__()
        self.layout, self.dim = layout, int(dim)
        self.weight = self.create_parameter([layout.embed_rows, self.dim], attr=normal_attr(init_std))
        self.dense_weight = self.create_parameter([layout.num_dense, self.dim], attr=normal_attr(init_std)) \
            if layout.num_dense else None

    def forward(self, ids, values=None):
        L = self.layout
        n_embed = L.num_embed_cols
        x = ids if n_embed == ids.shape[1] else ids[:, :n_embed]
        emb = F.embedding(x, self.weight)
        if L.seq_lens:
            parts = [emb[:, :L.num_sparse]] if L.num_sparse else []
            parts += pool_sequences(emb, x, L)
            emb = paddle.concat(parts, axis=1)
        if L.num_dense:
            dense = values.unsqueeze(-1) * self.dense_weight
            emb = paddle.concat([emb, dense], axis=1) if n_embed else dense
        return emb


def pool_sequences(emb, ids, layout: Layout) -> list[paddle.Tensor]:
    """One ``[B, 1, D]`` vector per sequence feature: masked mean (or sum) of its ids' rows."""
    out, off = [], layout.num_sparse
    for n, pool in zip(layout.seq_lens, layout.seq_pooling):  # noqa: B905 (paddle.jit's dy2static rejects strict=)
        seg = emb[:, off:off + n]
        mask = (ids[:, off:off + n] > 0).astype(emb.dtype).unsqueeze(-1)
        s = (seg * mask).sum(axis=1, keepdim=True)
        if pool == "mean":
            s = s / mask.sum(axis=1, keepdim=True).clip(min=1.0)
        out.append(s)
        off += n
    return out


class LinearLogit(nn.Layer):
    """First-order part ``b + sum_i w[id_i] + sum_j w_j x_j``: every id column counts (sparse, wide-only
    and crosses), a sequence feature by the mean (or sum) of its ids' weights."""

    def __init__(self, layout: Layout, init_std: float = 1e-4):
        super().__init__()
        self.layout = layout
        self.weight = self.create_parameter([layout.vocab_size, 1], attr=normal_attr(init_std))
        self.dense_weight = self.create_parameter([layout.num_dense], attr=normal_attr(init_std)) \
            if layout.num_dense else None
        self.bias = self.create_parameter([1], is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    def forward(self, ids, values=None):
        L = self.layout
        w = F.embedding(ids, self.weight)  # [B, n_cols, 1]
        if L.seq_lens:
            start, end = L.num_sparse, L.num_embed_cols
            parts = [w[:, :start].sum(axis=[1, 2]), w[:, end:].sum(axis=[1, 2])]
            parts += [p.sum(axis=[1, 2]) for p in pool_sequences(w, ids, L)]
            out = paddle.add_n(parts)
        else:
            out = w.sum(axis=[1, 2])
        if L.num_dense:
            out = out + (values * self.dense_weight).sum(axis=1)
        return out + self.bias


class Dropout(nn.Layer):
    """Inverted dropout with the keep-mask drawn by numpy's global RNG (16-bit uniform; Paddle's CPU
    dropout kernel is several times slower, and in a recommender DNN it cost a third of a training step).
    The Trainer seeds numpy's RNG and saves its state in checkpoints, so runs repeat and resume exactly.
    Identity in eval mode (and so in exported graphs)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {p}")
        self.p = float(p)
        self.threshold = int(round(self.p * 65536))
        self.scale = 65536.0 / (65536 - self.threshold)

    def forward(self, x):
        if not self.training or self.threshold == 0:
            return x
        r = np.random.randint(0, 65536, size=x.shape, dtype=np.uint16)
        mask = (r >= self.threshold).astype(np.float32)
        mask *= self.scale
        return x * paddle.to_tensor(mask, place=x.place)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Layer):
    """``Linear -> [BatchNorm] -> activation -> [Dropout]`` per hidden layer, then an optional output
    Linear (``output_dim``) without activation."""

    def __init__(self, input_dim: int, hidden_units: Sequence[int], activation: str = "relu",
                 dropout: float = 0.0, batch_norm: bool = False, output_dim: int | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"Arch.hidden_activation: unknown {activation!r} ({', '.join(ACTIVATIONS)})")
        layers, d = [], int(input_dim)
        for h in hidden_units:
            layers.append(xavier_linear(d, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1D(int(h)))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(Dropout(dropout))
            d = int(h)
        if output_dim is not None:
            layers.append(xavier_linear(d, int(output_dim)))
            d = int(output_dim)
        self.net = nn.Sequential(*layers)
        self.output_dim = d

    def forward(self, x):
        return self.net(x)


def fm_interaction(emb):
    """Second-order FM term ``sum_{i<j} <v_i, v_j>`` = 0.5 * ((sum_i v_i)^2 - sum_i v_i^2), per sample."""
    s = emb.sum(axis=1)
    return 0.5 * (s * s - (emb * emb).sum(axis=1)).sum(axis=1)


class FieldAwareEmbedding(nn.Layer):
    """FFM embeddings: every feature has one vector per field, ``[B, F, F, D]`` where ``[:, i, j]`` is
    the vector feature ``i`` uses against field ``j`` (``[:, i, i]``: its own, the ONN "copy")."""

    def __init__(self, layout: Layout, dim: int, init_std: float = 1e-4):
        super().__init__()
        self.num_fields, self.dim = layout.num_fields, int(dim)
        self.inner = FeatureEmbedding(layout, self.num_fields * self.dim, init_std)
        iu, ju = np.triu_indices(self.num_fields, 1)
        # flat positions of v_{i, f_j} and v_{j, f_i} in [B, F*F, D], for every pair i < j
        self.register_buffer("left_idx", paddle.to_tensor(iu * self.num_fields + ju, dtype="int64"), persistable=False)
        self.register_buffer("right_idx", paddle.to_tensor(ju * self.num_fields + iu, dtype="int64"), persistable=False)
        self.register_buffer("diag_idx", paddle.to_tensor(np.arange(self.num_fields) * (self.num_fields + 1),
                                                          dtype="int64"), persistable=False)

    @property
    def weight(self):
        return self.inner.weight

    def forward(self, ids, values=None):
        emb = self.inner(ids, values)  # [B, F, F*D]
        return emb.reshape([-1, self.num_fields * self.num_fields, self.dim])

    def pair_products(self, flat):
        """``[B, F*(F-1)/2, D]``: ``v_{i,f_j} * v_{j,f_i}`` for every pair of fields ``i < j``."""
        return paddle.index_select(flat, self.left_idx, axis=1) * paddle.index_select(flat, self.right_idx, axis=1)

    def own(self, flat):
        """``[B, F, D]``: each feature's vector for its own field."""
        return paddle.index_select(flat, self.diag_idx, axis=1)


class CTRModel(nn.Layer):
    """Base of the CTR models: ``forward(ids[, values])`` -> probability; subclasses define ``logit``.

    A model's hyperparameters are the keyword-only arguments of its constructor (no defaults: they live in
    ``defaults/rec.yaml``); its builder passes exactly those ``Arch`` keys (:func:`model_arguments`)."""

    kind = "ctr"

    def __init__(self, layout: Layout):
        super().__init__()
        self.layout = layout

    @property
    def input_names(self) -> list[str]:
        return ["ids", "values"] if self.layout.num_dense else ["ids"]

    def logit(self, ids, values=None):
        raise TypeError(f"{type(self).__name__} must define logit(ids, values)")

    def forward(self, ids, values=None):
        return F.sigmoid(self.logit(ids, values))

    def embedding_parameters(self) -> list[paddle.Tensor]:
        """The embedding tables (and first-order weights): what ``Arch.embedding_regularizer`` applies to."""
        out = []
        for layer in self.sublayers(include_self=True):
            if isinstance(layer, (FeatureEmbedding, LinearLogit)):
                out += [p for p in (layer.weight, layer.dense_weight) if p is not None]
        return out

    def upgrade_state_dict(self, state: dict) -> dict:
        """Weights saved before the embedding tables left out the rows of linear-only features (crosses,
        ``embed: false``): their tables have those trailing rows, which no embedding reads; drop them (the
        model's outputs are the same). Called by ``engine.checkpoint.load_model_weights``."""
        for prefix, layer in self.named_sublayers(include_self=True):
            if not isinstance(layer, FeatureEmbedding):
                continue
            key = f"{prefix}.weight" if prefix else "weight"
            have, rows = state.get(key), int(layer.weight.shape[0])
            if have is not None and np.ndim(have) == 2 and np.shape(have)[0] > rows \
                    and np.shape(have)[1] == int(layer.weight.shape[1]):
                state = {**state, key: np.asarray(have)[:rows]}
                log.info("%s: %d rows of linear-only features dropped from the saved table (no embedding reads "
                         "them; weights saved before the table was trimmed)", key, np.shape(have)[0] - rows)
        return state


# ---- hyperparameters and registration ---------------------------------------------------------
#: ``Arch`` keys the rec task reads for every model: the L2 of the embedding tables and of the other weights
TASK_ARCH_KEYS = ("embedding_regularizer", "net_regularizer")


def model_parameters(model_cls) -> tuple[str, ...]:
    """The hyperparameters of a rec model class: its constructor's keyword-only parameters, in order."""
    signature = inspect.signature(model_cls.__init__)
    return tuple(name for name, p in signature.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def model_arguments(cfg, model_cls) -> dict:
    """``{key: cfg.Arch[key]}`` for each hyperparameter of ``model_cls`` (a loaded config has every key)."""
    arch = cfg["Arch"]
    return {name: arch[name] for name in model_parameters(model_cls)}


def register_rec_model(name: str, model_cls, small_config: dict):
    """``@register_model`` for the builder of a rec model class: the ``Arch`` keys the model takes are its
    hyperparameters and :data:`TASK_ARCH_KEYS` (a config setting another is an error naming the key);
    ``builder.model_class`` is the class."""
    register = register_model(name, family="rec", small_config=small_config,
                              arch_keys=model_parameters(model_cls) + TASK_ARCH_KEYS)

    def deco(builder):
        builder.model_class = model_cls
        return register(builder)

    return deco


def small_config(arch: dict | None = None, data: dict | None = None) -> dict:
    """A tiny instance for registry-wide tests: synthetic data; ``arch`` sets the model's small sizes."""
    d = {"format": "synthetic"}
    d.update(data or {})
    return {"Arch": dict(arch or {}), "Data": d, "Global": {"batch_size": 64, "eval_batch_size": 128}}


__all__ = ["FeatureEmbedding", "LinearLogit", "MLP", "Dropout", "FieldAwareEmbedding", "CTRModel", "fm_interaction",
           "model_arguments", "model_parameters", "register_rec_model", "small_config", "xavier_linear",
           "TASK_ARCH_KEYS"]
