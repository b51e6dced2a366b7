"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), part by part, in one file.

Read top to bottom:

1. ``scaled_dot_product_attention``  softmax(Q K^T / sqrt(d_k) + mask) V        (paper eq. 1)
2. ``MultiHeadAttention``            h heads of (1) on learned projections, concatenated, projected
3. ``SinusoidalPositionalEncoding``  PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
   ``LearnedPositionalEncoding``     one trained vector per position (the paper's variant, table 3 E)
4. ``PositionwiseFeedForward``       FFN(x) = max(0, x W1 + b1) W2 + b2, applied at every position
5. ``EncoderLayer`` / ``DecoderLayer`` residual + LayerNorm around each sub-layer; post-norm
   ``LayerNorm(x + Dropout(Sublayer(x)))`` as in the paper, or pre-norm ``x + Dropout(Sublayer(LayerNorm(x)))``
6. ``Transformer``                   embeddings scaled by sqrt(d_model) + positions, N encoder layers,
   N decoder layers, output projection (optionally tied to the embeddings), padding and causal masks.

Masks are *additive*: 0 where attention is allowed and ``-1e9`` where it is not, broadcast to
``[batch, heads, query_len, key_len]``. Attribute names follow ``paddle.nn.MultiHeadAttention`` /
``paddle.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` (``self_attn``, ``q_proj``, ``linear1``,
``norm1``...), so a state dict of Paddle's own layers loads into ours as it is (the parity tests do that).

Incremental decoding: ``Transformer.init_cache`` projects the encoder memory once per decoder layer
(cross-attention keys/values) and starts empty self-attention key/value caches; ``Transformer.decode`` with
``cache=`` feeds only the newest target positions and appends their keys/values to the cache, so one
decoding step costs O(t) instead of recomputing the whole prefix (O(t^2)). See ``decoding.py``.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..registry import register_model

#: special token ids shared by the tokenizers (SentencePiece is trained with these ids; the toy task uses them)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: what a masked attention logit gets added (the same value Paddle uses for a boolean mask)
NEG_INF = -1e9


# ---- masks ----------------------------------------------------------------------------------------
def padding_mask(ids: paddle.Tensor, pad_id: int = 0) -> paddle.Tensor:  # 0 == PAD_ID (a literal: dy2static)
    """Additive key-padding mask ``[B, 1, 1, L]``: ``-1e9`` at padding tokens of ``ids`` ``[B, L]``, else 0."""
    return (ids == pad_id).astype("float32").unsqueeze([1, 2]) * NEG_INF


def causal_mask(length, dtype: str = "float32") -> paddle.Tensor:
    """Additive causal mask ``[1, 1, L, L]``: position i may attend to positions j <= i only."""
    full = paddle.full([length, length], NEG_INF, dtype=dtype)
    return paddle.triu(full, diagonal=1).unsqueeze([0, 1])


# ---- 1. scaled dot-product attention --------------------------------------------------------------
def scaled_dot_product_attention(q, k, v, mask=None, dropout: float = 0.0, training: bool = False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + mask) V.

    ``q`` ``[B, H, Lq, d_k]``, ``k`` ``[B, H, Lk, d_k]``, ``v`` ``[B, H, Lk, d_v]``; ``mask`` additive,
    broadcastable to ``[B, H, Lq, Lk]``. Returns the output ``[B, H, Lq, d_v]`` and the weights.
    """
    d_k = q.shape[-1]
    scores = paddle.matmul(q * (d_k ** -0.5), k, transpose_y=True)
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, axis=-1)
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout, training=training)
    return paddle.matmul(weights, v), weights


# ---- 2. multi-head attention ----------------------------------------------------------------------
class MultiHeadAttention(nn.Layer):
    """MultiHead(Q, K, V) = Concat(head_1..head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h per-head projections are one ``Linear(d_model, d_model)`` each for Q, K, V, split into heads.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def split_heads(self, x):  # [B, L, d_model] -> [B, H, L, head_dim]
        return x.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])

    def compute_kv(self, key, value):
        """Projected keys and values ``[B, H, L, head_dim]`` (what the decoding cache stores)."""
        return self.split_heads(self.k_proj(key)), self.split_heads(self.v_proj(value))

    def forward(self, query, key=None, value=None, mask=None, cache=None, static_kv=None):
        """``query`` ``[B, Lq, d_model]``; ``key``/``value`` default to ``query`` (self-attention).

        ``cache=(k, v)``: keys/values of earlier positions; the new ones are appended and
        ``(out, (k, v))`` is returned. ``static_kv=(k, v)``: precomputed keys/values (cross-attention
        over the encoder memory during decoding); ``key``/``value`` are then ignored.
        """
        key = query if key is None else key
        value = key if value is None else value
        q = self.split_heads(self.q_proj(query))
        if static_kv is not None:
            k, v = static_kv
        else:
            k, v = self.compute_kv(key, value)
        if cache is not None:
            k = paddle.concat([cache[0], k], axis=2)
            v = paddle.concat([cache[1], v], axis=2)
        out, _ = scaled_dot_product_attention(q, k, v, mask, self.dropout, self.training)
        out = out.transpose([0, 2, 1, 3]).reshape([0, 0, self.d_model])  # concat heads
        out = self.out_proj(out)
        return (out, (k, v)) if cache is not None else out


# ---- 3. positional encodings ----------------------------------------------------------------------
def sinusoid_table(max_len: int, d_model: int) -> np.ndarray:
    """The paper's table: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    i2 = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angle = pos / np.power(10000.0, i2 / d_model)
    table = np.zeros([max_len, d_model], dtype=np.float64)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return table.astype("float32")


class SinusoidalPositionalEncoding(nn.Layer):
    """Fixed encodings; a buffer (saved with the model, not trained)."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", paddle.to_tensor(sinusoid_table(max_len, d_model)), persistable=False)

    def forward(self, length, start: int = 0):
        """Encodings of positions ``start .. start+length-1``, shape ``[1, length, d_model]``."""
        return self.table[start : start + length].unsqueeze(0)


class LearnedPositionalEncoding(nn.Layer):
    """One trained vector per position (max_len positions)."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.weight = self.create_parameter(
            [max_len, d_model], default_initializer=nn.initializer.Normal(0.0, d_model ** -0.5))

    def forward(self, length, start: int = 0):
        return self.weight[start : start + length].unsqueeze(0)


# ---- 4. position-wise feed-forward ----------------------------------------------------------------
class PositionwiseFeedForward(nn.Layer):
    """FFN(x) = act(x W1 + b1) W2 + b2 (ReLU in the paper), the same at every position.

    Kept inline in the layers below under Paddle's names (``linear1``, ``linear2``); this class exists
    so the part can be used and tested on its own.
    """

    def __init__(self, d_model: int, d_ff: int, act_dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.act_dropout = act_dropout
        self.activation = getattr(F, activation)

    def forward(self, x):
        return self.linear2(F.dropout(self.activation(self.linear1(x)), self.act_dropout, training=self.training))


# ---- 5. encoder and decoder layers ----------------------------------------------------------------
class EncoderLayer(nn.Layer):
    """Self-attention, then FFN; each sub-layer wrapped in dropout + residual + LayerNorm.

    ``normalize_before=False``: post-norm, ``x = LayerNorm(x + Dropout(Sublayer(x)))`` (the paper).
    ``normalize_before=True``: pre-norm, ``x = x + Dropout(Sublayer(LayerNorm(x)))`` (trains without
    warmup more easily; the stack then ends with a final LayerNorm).
    """

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, attn_dropout=0.0, act_dropout=0.0,
                 activation="relu", normalize_before=False, layer_norm_eps=1e-5):
        super().__init__()
        self.normalize_before = normalize_before
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_dropout)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model, epsilon=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, epsilon=layer_norm_eps)
        self.dropout, self.act_dropout = dropout, act_dropout
        if activation not in ("relu", "gelu"):
            raise ValueError(f"Arch.activation: unknown {activation!r} (relu, gelu)")
        self.activation = getattr(F, activation)

    def _sublayer(self, x, norm, fn):
        h = fn(norm(x) if self.normalize_before else x)
        x = x + F.dropout(h, self.dropout, training=self.training)
        return x if self.normalize_before else norm(x)

    def _ffn(self, x):
        h = F.dropout(self.activation(self.linear1(x)), self.act_dropout, training=self.training)
        return self.linear2(h)

    def forward(self, x, mask=None):
        x = self._sublayer(x, self.norm1, lambda h: self.self_attn(h, mask=mask))
        return self._sublayer(x, self.norm2, self._ffn)


class DecoderLayer(EncoderLayer):
    """Masked self-attention, cross-attention over the encoder memory, then FFN (three sub-layers)."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.1, attn_dropout=0.0, act_dropout=0.0,
                 activation="relu", normalize_before=False, layer_norm_eps=1e-5):
        super().__init__(d_model, num_heads, d_ff, dropout, attn_dropout, act_dropout, activation,
                         normalize_before, layer_norm_eps)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, attn_dropout)
        self.norm3 = nn.LayerNorm(d_model, epsilon=layer_norm_eps)

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        """``cache``: ``{"k", "v"}`` of earlier target positions and ``{"mk", "mv"}`` (projected memory);
        updated in place with this call's keys/values. Without it, ``memory`` is projected here."""
        if cache is None:
            x = self._sublayer(x, self.norm1, lambda h: self.self_attn(h, mask=self_mask))
            x = self._sublayer(x, self.norm2, lambda h: self.cross_attn(h, memory, memory, mask=memory_mask))
        else:
            def self_step(h):
                out, (cache["k"], cache["v"]) = self.self_attn(h, mask=self_mask, cache=(cache["k"], cache["v"]))
                return out

            x = self._sublayer(x, self.norm1, self_step)
            x = self._sublayer(x, self.norm2, lambda h: self.cross_attn(
                h, mask=memory_mask, static_kv=(cache["mk"], cache["mv"])))
        return self._sublayer(x, self.norm3, self._ffn)


# ---- 6. the whole model ---------------------------------------------------------------------------
class Transformer(nn.Layer):
    """Encoder-decoder Transformer over one joint vocabulary (``PAD_ID``, ``BOS_ID``, ``EOS_ID`` above).

    ``forward(src_ids [B, S], tgt_ids [B, T]) -> logits [B, T, vocab]`` (teacher forcing: ``tgt_ids``
    starts with BOS; position t predicts token t+1). Padding in ``src_ids`` is masked in every attention
    over the source; the decoder's self-attention is causal (padding sits at the end of a target, where
    a causal mask already keeps real positions from seeing it).
    """

    def __init__(self, vocab_size: int, d_model: int = 512, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, d_ff: int = 2048, dropout: float = 0.1, attn_dropout: float = 0.0,
                 act_dropout: float = 0.0, activation: str = "relu", normalize_before: bool = False,
                 pos_encoding: str = "sinusoidal", max_len: int = 256, share_embeddings: bool = True,
                 tie_output: bool = True, pad_id: int = PAD_ID):
        super().__init__()
        self.vocab_size, self.d_model, self.pad_id, self.dropout = vocab_size, d_model, pad_id, dropout
        self.normalize_before, self.max_len = normalize_before, max_len
        emb_init = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, d_model ** -0.5))
        self.src_embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id, weight_attr=emb_init)
        self.tgt_embed = self.src_embed if share_embeddings else nn.Embedding(
            vocab_size, d_model, padding_idx=pad_id, weight_attr=emb_init)
        if pos_encoding == "sinusoidal":
            self.pos_encoding = SinusoidalPositionalEncoding(d_model, max_len)
        elif pos_encoding == "learned":
            self.pos_encoding = LearnedPositionalEncoding(d_model, max_len)
        else:
            raise ValueError(f"Arch.pos_encoding: unknown {pos_encoding!r} (sinusoidal, learned)")
        layer_args = dict(d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout,
                          attn_dropout=attn_dropout, act_dropout=act_dropout, activation=activation,
                          normalize_before=normalize_before)
        self.encoder_layers = nn.LayerList([EncoderLayer(**layer_args) for _ in range(num_encoder_layers)])
        self.decoder_layers = nn.LayerList([DecoderLayer(**layer_args) for _ in range(num_decoder_layers)])
        # pre-norm leaves the residual stream un-normalized: close each stack with a LayerNorm
        self.encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.decoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.tie_output = tie_output
        self.output_proj = None if tie_output else nn.Linear(d_model, vocab_size, bias_attr=False)

    # -- pieces ----------------------------------------------------------------------------------
    def embed(self, embedding, ids, start: int = 0):
        """Token embedding * sqrt(d_model) + positional encoding, then dropout (paper section 3.4, 5.4)."""
        length = ids.shape[1]
        x = embedding(ids) * math.sqrt(self.d_model) + self.pos_encoding(length, start)
        return F.dropout(x, self.dropout, training=self.training)

    def project(self, h):
        """Decoder states -> vocabulary logits (shared with the target embedding when tied)."""
        if self.tie_output:
            return paddle.matmul(h, self.tgt_embed.weight, transpose_y=True)
        return self.output_proj(h)

    def encode(self, src_ids):
        """``src_ids [B, S]`` -> (memory ``[B, S, d_model]``, source padding mask ``[B, 1, 1, S]``)."""
        src_mask = padding_mask(src_ids, self.pad_id)
        x = self.embed(self.src_embed, src_ids)
        for layer in self.encoder_layers:
            x = layer(x, src_mask)
        if self.encoder_norm is not None:
            x = self.encoder_norm(x)
        return x, src_mask

    def decode(self, tgt_ids, memory, memory_mask, cache: list[dict] | None = None, start: int = 0,
               last_only: bool = False):
        """Logits ``[B, T, vocab]`` for target positions ``start .. start+T-1``.

        Without ``cache``: the whole prefix at once with a causal mask (training, full recomputation).
        With ``cache`` (from ``init_cache``): ``tgt_ids`` holds only the new positions; earlier
        positions' keys/values come from the cache, which is extended in place.
        ``last_only``: project only the last position to the vocabulary (decoding without a cache).
        """
        length = tgt_ids.shape[1]
        x = self.embed(self.tgt_embed, tgt_ids, start)
        if cache is None:
            self_mask = causal_mask(length)
        elif length > 1:  # several new positions at once: causal among them, all earlier ones visible
            prev = paddle.zeros([1, 1, length, start], dtype="float32")
            self_mask = paddle.concat([prev, causal_mask(length)], axis=-1)
        else:
            self_mask = None  # one new position sees every cached one
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, self_mask, memory_mask, None if cache is None else cache[i])
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.project(x[:, -1:] if last_only else x)

    def init_cache(self, memory) -> list[dict]:
        """Per decoder layer: empty self-attention keys/values and the projected encoder memory."""
        batch = memory.shape[0]
        caches = []
        for layer in self.decoder_layers:
            attn = layer.self_attn
            empty = paddle.zeros([batch, attn.num_heads, 0, attn.head_dim], dtype=memory.dtype)
            mk, mv = layer.cross_attn.compute_kv(memory, memory)
            caches.append({"k": empty, "v": empty, "mk": mk, "mv": mv})
        return caches

    def forward(self, src_ids, tgt_ids):
        memory, src_mask = self.encode(src_ids)
        return self.decode(tgt_ids, memory, src_mask)


def reorder_cache(cache: list[dict], index) -> list[dict]:
    """Select rows ``index`` (``[N]`` int64) of every cached tensor (beam search reordering)."""
    return [{k: paddle.index_select(v, index, axis=0) for k, v in layer.items()} for layer in cache]


def model_from_arch(arch) -> Transformer:
    """Build a ``Transformer`` from a config's ``Arch`` section (keys documented in defaults/transformer.yaml)."""
    return Transformer(
        vocab_size=int(arch["vocab_size"]), d_model=int(arch["d_model"]), num_heads=int(arch["num_heads"]),
        num_encoder_layers=int(arch["num_encoder_layers"]), num_decoder_layers=int(arch["num_decoder_layers"]),
        d_ff=int(arch["d_ff"]), dropout=float(arch["dropout"]), attn_dropout=float(arch["attn_dropout"]),
        act_dropout=float(arch["act_dropout"]), activation=str(arch["activation"]),
        normalize_before=bool(arch["normalize_before"]), pos_encoding=str(arch["pos_encoding"]),
        max_len=int(arch["max_len"]), share_embeddings=bool(arch["share_embeddings"]),
        tie_output=bool(arch["tie_output"]),
    )


@register_model("transformer", family="transformer", small_config={
    "Arch": {"vocab_size": 24, "d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
             "d_ff": 32, "max_len": 32},
    "Data": {"kind": "toy", "toy_train_size": 64, "toy_val_size": 16, "max_tokens": 0}})
def build_transformer(cfg) -> Transformer:
    return model_from_arch(cfg["Arch"])
