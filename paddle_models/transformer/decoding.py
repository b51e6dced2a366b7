"""Batched decoding for ``model.Transformer``: greedy search and beam search, with or without a key/value cache.

Both run the encoder once, then one decoder step per output token. With ``use_cache=True`` a step feeds
only the newest token and reuses the keys/values of earlier positions (``Transformer.init_cache``); with
``use_cache=False`` it recomputes the decoder over the whole prefix (the reference the cache must match).
Outputs are ``[B, L]`` int64 numpy arrays: tokens up to and including EOS, then ``PAD_ID``.
``strip_special`` turns a row into the token list a tokenizer decodes. ``export_greedy`` and
``export_beam_search`` run the same searches on the exported encoder and decoder-step graphs (the beam
search's state is shared: ``_BeamSearch`` over a model's steps or the graphs' steps).
"""
from __future__ import annotations

import numpy as np
import paddle

from .model import BOS_ID, EOS_ID, PAD_ID, reorder_cache

_NEG = -1e9  # "impossible" log-probability (finite, so sums and ratios never give NaN)


def check_decode_settings(decode_cfg: dict) -> None:
    """The output budget ``max_len_a * source_length + max_len_b`` must allow a one-token source (length 2 with
    its EOS) two output tokens (a token and EOS); else a ValueError naming the keys. (The single keys' ranges
    are in ``config.RANGES``.)"""
    a, b = float(decode_cfg["max_len_a"]), int(decode_cfg["max_len_b"])
    if int(a * 2 + b) < 2:
        raise ValueError(f"Decode.max_len_a / Decode.max_len_b: {a} * source_length + {b} output tokens leaves a "
                         f"one-token source (2 with EOS) fewer than 2 output tokens: every translation would be "
                         f"cut to one token; raise max_len_a or max_len_b")


def max_output_len(model, src_len: int, a: float, b: int) -> int:
    """``a * src_len + b`` output tokens, at most what the model's positional table allows."""
    return max(1, min(int(a * src_len + b), model.max_len - 1))


def log_softmax(x):
    """``x - logsumexp(x)`` over the last axis (much faster than Paddle's CPU log_softmax kernel)."""
    return x - paddle.logsumexp(x, axis=-1, keepdim=True)


def _step_logits(model, tokens, memory, memory_mask, cache, t):
    """Logits ``[N, V]`` of the token after ``tokens`` ``[N, t+1]`` (BOS first)."""
    if cache is not None:
        return model.decode(tokens[:, -1:], memory, memory_mask, cache, start=t)[:, -1]
    return model.decode(tokens, memory, memory_mask, last_only=True)[:, -1]


@paddle.no_grad()
def greedy_search(model, src_ids, max_len: int, use_cache: bool = True, bos_id: int = BOS_ID,
                  eos_id: int | None = EOS_ID, pad_id: int = PAD_ID) -> np.ndarray:
    """Pick the most probable token at each step, for a whole batch at once.

    Stops when every sentence has produced ``eos_id`` or after ``max_len`` tokens; ``eos_id=None``
    never stops early (benchmarks use it to decode a fixed length).
    """
    was_training = model.training
    model.eval()
    src_ids = paddle.to_tensor(src_ids) if not isinstance(src_ids, paddle.Tensor) else src_ids
    batch = src_ids.shape[0]
    memory, memory_mask = model.encode(src_ids)
    cache = model.init_cache(memory) if use_cache else None
    tokens = paddle.full([batch, 1], bos_id, dtype="int64")
    finished = paddle.zeros([batch], dtype="bool")
    for t in range(min(max_len, model.max_len - 1)):
        logits = _step_logits(model, tokens, memory, memory_mask, cache, t)
        nxt = paddle.argmax(logits, axis=-1)
        nxt = paddle.where(finished, paddle.full_like(nxt, pad_id), nxt)
        tokens = paddle.concat([tokens, nxt.unsqueeze(1)], axis=1)
        if eos_id is not None:
            finished = paddle.logical_or(finished, nxt == eos_id)
            if bool(finished.all()):
                break
    model.train(was_training)
    return tokens[:, 1:].numpy()


def length_penalty(length, alpha: float):
    """GNMT's length normalization lp(Y) = ((5 + |Y|) / 6) ^ alpha (Wu et al., 2016); alpha=0: none."""
    return ((5.0 + length) / 6.0) ** alpha


@paddle.no_grad()
def beam_search(model, src_ids, beam_size: int, max_len: int, alpha: float = 0.6, use_cache: bool = True,
                bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> np.ndarray:
    """Batched beam search; hypotheses are ranked by ``log P(Y|X) / length_penalty(|Y|, alpha)``, alpha >= 0.

    Each sentence keeps ``beam_size`` live hypotheses. At every step the ``2 * beam_size`` best
    extensions are ranked; those ending in EOS within the first ``beam_size`` are finished hypotheses
    (the best one of each sentence is kept aside, so a finished hypothesis never takes a live one's
    place), and the best ``beam_size`` others live on. A sentence is done when its best finished
    hypothesis beats what any live one could still reach (a log-probability can only fall, and the
    penalty is at most ``length_penalty(max_len)``); the search ends when every sentence is done or after
    ``max_len`` tokens, where live hypotheses count as complete.
    """
    was_training = model.training
    model.eval()
    src_ids = paddle.to_tensor(src_ids) if not isinstance(src_ids, paddle.Tensor) else src_ids
    steps = _ModelSteps(model, src_ids, int(beam_size), use_cache)
    out = _run_beam_search(steps, src_ids.shape[0], int(beam_size), min(max_len, model.max_len - 1), alpha, bos_id,
                           eos_id, pad_id)
    model.train(was_training)
    return out


def _run_beam_search(steps, batch: int, beam_size: int, max_steps: int, alpha: float, bos_id: int, eos_id: int,
                     pad_id: int) -> np.ndarray:
    """The search of :func:`beam_search` over ``steps`` (:class:`_ModelSteps` or :class:`_GraphSteps`)."""
    search = _BeamSearch(steps, batch, beam_size, bos_id)
    max_lp = length_penalty(float(max_steps), alpha)
    for t in range(max_steps):
        top_scores, beam, tok = search.best_extensions(t)
        is_eos = tok == eos_id
        search.keep_finished(top_scores, beam, is_eos, length_penalty(t + 1.0, alpha), eos_id)
        search.advance(top_scores, beam, tok, is_eos)
        if search.done(max_lp):
            break
    return search.outputs(max_lp, pad_id)


class _ModelSteps:
    """The decoder steps of a dygraph model for ``B*K`` hypotheses (each source's encoding repeated for its
    ``K`` beams, rows ``b*K .. b*K+K-1``): the next token's log-probabilities, and the cache's rows reordered
    when the hypotheses are."""

    def __init__(self, model, src_ids, beam_size: int, use_cache: bool):
        B, K = src_ids.shape[0], beam_size
        memory, memory_mask = model.encode(src_ids)
        rows = paddle.arange(B, dtype="int64").unsqueeze(1).expand([B, K]).reshape([-1])  # b -> b*K..b*K+K-1
        self.model = model
        self.memory, self.memory_mask = paddle.index_select(memory, rows, 0), paddle.index_select(memory_mask, rows, 0)
        self.cache = model.init_cache(self.memory) if use_cache else None

    def log_probs(self, tokens, t: int):
        """``[B*K, V]`` log-probabilities of the token after ``tokens`` ``[B*K, t+1]``."""
        return log_softmax(_step_logits(self.model, tokens, self.memory, self.memory_mask, self.cache, t))

    def reorder(self, rows) -> None:
        if self.cache is not None:
            self.cache = reorder_cache(self.cache, rows)


class _GraphSteps:
    """:class:`_ModelSteps` over the exported ``encoder`` and ``decoder_step`` graphs (callables on numpy arrays
    in the graphs' input/output order, see :func:`export_greedy`); the step graph's self-attention cache is
    carried here."""

    def __init__(self, encoder_fn, step_fn, src_ids: np.ndarray, beam_size: int, num_layers: int, num_heads: int,
                 head_dim: int):
        memory_k, memory_v, memory_mask = encoder_fn(src_ids)
        self.memory = [np.repeat(np.asarray(x), beam_size, axis=0) for x in (memory_k, memory_v, memory_mask)]
        rows = self.memory[0].shape[0]
        self.cache_k = np.zeros([rows, num_layers, num_heads, 0, head_dim], "float32")
        self.cache_v = self.cache_k.copy()
        self.step_fn = step_fn

    def log_probs(self, tokens, t: int):
        last = tokens[:, -1:].numpy()
        logp, self.cache_k, self.cache_v = self.step_fn(last, *self.memory, self.cache_k, self.cache_v)
        return paddle.to_tensor(np.asarray(logp, "float32"))

    def reorder(self, rows) -> None:
        index = rows.numpy()
        self.cache_k, self.cache_v = np.asarray(self.cache_k)[index], np.asarray(self.cache_v)[index]


@paddle.no_grad()
def export_beam_search(encoder_fn, step_fn, src_ids: np.ndarray, beam_size: int, max_len: int, num_layers: int,
                       num_heads: int, head_dim: int, alpha: float = 0.6, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                       pad_id: int = PAD_ID) -> np.ndarray:
    """:func:`beam_search` driven by the two exported graphs (as :func:`export_greedy`): the same search over
    the same log-probabilities, ``max_len`` tokens at most (within the export's positional table)."""
    src_ids = np.asarray(src_ids, "int64")
    steps = _GraphSteps(encoder_fn, step_fn, src_ids, int(beam_size), num_layers, num_heads, head_dim)
    return _run_beam_search(steps, src_ids.shape[0], int(beam_size), max_len, alpha, bos_id, eos_id, pad_id)


class _BeamSearch:
    """The state of a batched beam search over ``B`` sentences: ``K`` live hypotheses each (``tokens``
    ``[B*K, t+1]``, BOS first, rows ``b*K .. b*K+K-1`` for sentence ``b``; ``scores`` ``[B, K]``, their total
    log-probabilities), the decoder ``steps`` (model or exported graphs, with their cache), and each
    sentence's best finished hypothesis, kept aside (``best_norm``: its length-normalized score, ``best_seq``:
    its tokens)."""

    def __init__(self, steps, batch: int, beam_size: int, bos_id: int):
        B, K = batch, beam_size
        self.steps, self.B, self.K = steps, B, K
        self.tokens = paddle.full([B * K, 1], bos_id, dtype="int64")
        # all K beams start as the same BOS hypothesis: let only the first one expand at step 0
        self.scores = paddle.to_tensor(np.tile(np.array([0.0] + [_NEG] * (K - 1), "float32"), (B, 1)))
        self.offsets = (paddle.arange(B, dtype="int64") * K).unsqueeze(1)
        self.rank = paddle.arange(2 * K, dtype="int64").unsqueeze(0)
        self.best_norm = np.full([B], -np.inf)
        self.best_seq: list[np.ndarray | None] = [None] * B

    def best_extensions(self, t: int):
        """(total log-probabilities, source beam, token), each ``[B, 2K]``: the ``2K`` best one-token
        extensions of each sentence's live hypotheses (all of length t+1, so ranked by raw score)."""
        B, K = self.B, self.K
        logp = self.steps.log_probs(self.tokens, t)
        V = logp.shape[-1]
        cand = (self.scores.unsqueeze(-1) + logp.reshape([B, K, V])).reshape([B, K * V])
        top_scores, top = paddle.topk(cand, 2 * K, axis=-1)
        return top_scores, top // V, top % V

    def keep_finished(self, top_scores, beam, is_eos, penalty: float, eos_id: int) -> None:
        """Keep aside each sentence's best EOS extension ranked within the first K (and not from a dead
        start beam), scored ``log P / penalty``."""
        finished = (is_eos & (self.rank < self.K) & (top_scores > _NEG / 2)).numpy()
        if not finished.any():
            return
        norms = top_scores.numpy() / penalty
        prev = self.tokens.numpy()
        beams = beam.numpy()
        for b, j in zip(*np.nonzero(finished), strict=True):
            if norms[b, j] > self.best_norm[b]:
                self.best_norm[b] = norms[b, j]
                self.best_seq[b] = np.append(prev[b * self.K + beams[b, j], 1:], eos_id)

    def advance(self, top_scores, beam, tok, is_eos) -> None:
        """The K best extensions that are not EOS become the live hypotheses (tokens, scores, cache rows)."""
        K = self.K
        order = paddle.argsort(is_eos.astype("int64") * 2 * K + self.rank, axis=-1)[:, :K]
        self.scores = paddle.take_along_axis(top_scores, order, axis=1)
        flat = (self.offsets + paddle.take_along_axis(beam, order, axis=1)).reshape([-1])
        nxt = paddle.take_along_axis(tok, order, axis=1).reshape([-1, 1])
        self.tokens = paddle.concat([paddle.index_select(self.tokens, flat, 0), nxt], axis=1)
        self.steps.reorder(flat)

    def done(self, max_lp: float) -> bool:
        """True when every sentence's best finished hypothesis beats what any live one could still reach
        (a log-probability can only fall; the penalty is at most ``max_lp``)."""
        reachable = self.scores.max(axis=1).numpy() / max_lp
        return bool((self.best_norm >= reachable).all())

    def outputs(self, max_lp: float, pad_id: int) -> np.ndarray:
        """``[B, L]``: each sentence's best hypothesis, finished or live (live ones count as complete at
        max_len tokens; after an early stop none of them can win), padded with ``pad_id``."""
        live_norm = self.scores.numpy() / max_lp
        live = self.tokens.numpy()[:, 1:].reshape([self.B, self.K, -1])
        outs = []
        for b in range(self.B):
            k = int(np.argmax(live_norm[b]))
            best_finished = self.best_seq[b] is not None and self.best_norm[b] >= live_norm[b, k]
            outs.append(self.best_seq[b] if best_finished else live[b, k])
        width = max(len(o) for o in outs)
        out = np.full([self.B, width], pad_id, dtype="int64")
        for b, o in enumerate(outs):
            out[b, : len(o)] = o
        return out


def decode_batch(model, src_ids, beam_size: int = 1, max_len: int = 64, alpha: float = 0.6,
                 use_cache: bool = True) -> np.ndarray:
    """Greedy search for ``beam_size`` 1, beam search otherwise."""
    if beam_size <= 1:
        return greedy_search(model, src_ids, max_len, use_cache=use_cache)
    return beam_search(model, src_ids, beam_size, max_len, alpha=alpha, use_cache=use_cache)


def strip_special(row, eos_id: int = EOS_ID, pad_id: int = PAD_ID, bos_id: int = BOS_ID) -> list[int]:
    """Token ids up to (not including) the first EOS, without PAD/BOS."""
    out = []
    for t in np.asarray(row).tolist():
        if t == eos_id:
            break
        if t not in (pad_id, bos_id):
            out.append(int(t))
    return out


@paddle.no_grad()
def sequence_logprob(model, src_ids, hyp_ids, bos_id: int = BOS_ID, pad_id: int = PAD_ID) -> np.ndarray:
    """Total log-probability of each hypothesis row (up to PAD) under teacher forcing; ``[B]``."""
    model.eval()
    src = paddle.to_tensor(src_ids)
    hyp = paddle.to_tensor(hyp_ids)
    tgt_in = paddle.concat([paddle.full([hyp.shape[0], 1], bos_id, "int64"), hyp[:, :-1]], axis=1)
    logp = log_softmax(model(src, tgt_in))
    tok = paddle.take_along_axis(logp, hyp.unsqueeze(-1), axis=-1).squeeze(-1)
    return (tok * (hyp != pad_id).astype("float32")).sum(axis=1).numpy()


# ---- graphs for export (paddle.jit.save): the encoder once, then one cached decoder step per token ----
class EncoderGraph(paddle.nn.Layer):
    """``src_ids [B, S]`` -> the decoder's cross-attention keys and values for every layer,
    ``memory_k``/``memory_v`` ``[B, layers, heads, S, head_dim]``, and ``memory_mask [B, 1, 1, S]``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, src_ids):
        memory, memory_mask = self.model.encode(src_ids)
        ks, vs = [], []
        for layer in self.model.decoder_layers:
            k, v = layer.cross_attn.compute_kv(memory, memory)
            ks.append(k)
            vs.append(v)
        return paddle.stack(ks, axis=1), paddle.stack(vs, axis=1), memory_mask


class DecoderStepGraph(paddle.nn.Layer):
    """One incremental decoding step: the newest token ``[B, 1]``, the encoder's outputs and the
    self-attention cache of the ``t`` earlier positions (``cache_k``/``cache_v``
    ``[B, layers, heads, t, head_dim]``; the position of the token is ``t``) -> log-probabilities of the
    next token ``[B, vocab]`` and the cache extended to ``t + 1`` positions. Start with ``t = 0`` (empty
    caches) and the BOS token."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token, memory_k, memory_v, memory_mask, cache_k, cache_v):
        start = paddle.shape(cache_k)[3]
        cache = [{"k": cache_k[:, i], "v": cache_v[:, i], "mk": memory_k[:, i], "mv": memory_v[:, i]}
                 for i in range(len(self.model.decoder_layers))]
        logits = self.model.decode(token, None, memory_mask, cache, start=start)
        new_k = paddle.stack([c["k"] for c in cache], axis=1)
        new_v = paddle.stack([c["v"] for c in cache], axis=1)
        return log_softmax(logits[:, -1]), new_k, new_v


def export_greedy(encoder_fn, step_fn, src_ids: np.ndarray, max_len: int, num_layers: int, num_heads: int,
                  head_dim: int, bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> np.ndarray:
    """Greedy decoding driven by the two exported graphs (any callables taking and returning numpy
    arrays in the graphs' input/output order, e.g. Paddle Inference or onnxruntime sessions)."""
    mk, mv, mmask = encoder_fn(src_ids)
    batch = src_ids.shape[0]
    ck = np.zeros([batch, num_layers, num_heads, 0, head_dim], "float32")
    cv = ck.copy()
    token = np.full([batch, 1], bos_id, "int64")
    finished = np.zeros([batch], bool)
    out = []
    for _ in range(max_len):
        logp, ck, cv = step_fn(token, mk, mv, mmask, ck, cv)
        nxt = np.where(finished, pad_id, np.asarray(logp).argmax(-1)).astype("int64")
        out.append(nxt)
        finished |= nxt == eos_id
        token = nxt[:, None]
        if finished.all():
            break
    return np.stack(out, axis=1)
