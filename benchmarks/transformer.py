#!/usr/bin/env python
"""Transformer speed, measured side by side in one run.

1. Training tokens/s of our ``Transformer`` against ``paddle.nn.Transformer`` with the same sizes: both
   get the same embeddings (shared, scaled, sinusoidal positions), the same tied output projection, the
   same label-smoothed loss, the same batches and the same Adam step; only the encoder/decoder stacks
   differ. Each batch is one step of both models back to back (alternating which goes first), so that
   load from other processes hits both alike; the ratio is the median of the per-pair time ratios.
   Goal: ours >= 0.9x Paddle's.
2. Decoding tokens/s with the key/value cache against full recomputation of the prefix, greedy, a fixed
   output length (EOS ignored), the fastest of alternating runs of each. Goal: cache >= 3x.

    python benchmarks/transformer.py [--d-model 128 --heads 4 --layers 3 --d-ff 512 --vocab 4000] [--json]

The default sizes are those of configs/transformer/multi30k_small.yaml.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402

from paddle_models.transformer.decoding import greedy_search  # noqa: E402
from paddle_models.transformer.model import (  # noqa: E402
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SinusoidalPositionalEncoding,
    Transformer,
    padding_mask,
)
from paddle_models.transformer.task import label_smoothed_nll  # noqa: E402


class PaddleReference(nn.Layer):
    """``paddle.nn.Transformer`` wrapped with the same embedding / positions / output projection as ours."""

    def __init__(self, vocab, d_model, heads, layers, d_ff, dropout, max_len):
        super().__init__()
        self.d_model, self.dropout = d_model, dropout
        self.embed = nn.Embedding(vocab, d_model, padding_idx=PAD_ID,
                                  weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(0, d_model ** -0.5)))
        self.pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.core = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout=dropout, attn_dropout=0.0,
                                   act_dropout=0.0)

    def _emb(self, ids):
        x = self.embed(ids) * (self.d_model ** 0.5) + self.pos(ids.shape[1])
        return nn.functional.dropout(x, self.dropout, training=self.training)

    def forward(self, src_ids, tgt_ids):
        src_mask = padding_mask(src_ids)
        tgt_mask = self.core.generate_square_subsequent_mask(tgt_ids.shape[1])
        h = self.core(self._emb(src_ids), self._emb(tgt_ids), src_mask=src_mask, tgt_mask=tgt_mask,
                      memory_mask=src_mask)
        return paddle.matmul(h, self.embed.weight, transpose_y=True)


def make_batches(n, batch, src_len, tgt_len, vocab, seed=0):
    """Random token batches with realistic padding (lengths uniform in [len/2, len])."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        src = rng.randint(EOS_ID + 1, vocab, size=[batch, src_len]).astype("int64")
        tgt = rng.randint(EOS_ID + 1, vocab, size=[batch, tgt_len + 1]).astype("int64")
        for r in range(batch):
            ls, lt = rng.randint(src_len // 2, src_len + 1), rng.randint(tgt_len // 2, tgt_len + 1)
            src[r, ls - 1], src[r, ls:] = EOS_ID, PAD_ID
            tgt[r, lt], tgt[r, lt + 1:] = EOS_ID, PAD_ID
        tgt[:, 0] = BOS_ID
        ntok = int((src != PAD_ID).sum() + (tgt[:, 1:] != PAD_ID).sum())
        out.append((paddle.to_tensor(src), paddle.to_tensor(tgt[:, :-1]), paddle.to_tensor(tgt[:, 1:]), ntok))
    return out


def train_step_seconds(model, opt, batch, eps=0.1):
    """Wall seconds of one training step (forward, label-smoothed loss, backward, Adam)."""
    src, tin, tout, _ = batch
    model.train()
    t0 = time.perf_counter()
    loss, _, _ = label_smoothed_nll(model(src, tin), tout, eps)
    loss.backward()
    opt.step()
    opt.clear_grad()
    float(loss)  # sync
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=64, help="training sentences per batch")
    p.add_argument("--src-len", type=int, default=24)
    p.add_argument("--tgt-len", type=int, default=24)
    p.add_argument("--steps", type=int, default=6, help="distinct training batches")
    p.add_argument("--rounds", type=int, default=3, help="passes over the batches (each a step of both models)")
    p.add_argument("--decode-batch", type=int, default=16)
    p.add_argument("--decode-len", type=int, default=64, help="output tokens decoded (EOS ignored)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for Paddle's kernels (0: all cores). 1 by default: on a shared CPU a second "
                        "thread mostly adds synchronization noise to the many small ops of a decoding step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    paddle.set_device("cpu")
    threads = args.threads or os.cpu_count() or 1
    paddle.base.core.set_num_threads(threads)
    paddle.seed(args.seed)
    max_len = max(args.src_len, args.tgt_len, args.decode_len) + 2
    ours = Transformer(args.vocab, args.d_model, args.heads, args.layers, args.layers, args.d_ff, args.dropout,
                       max_len=max_len)
    ref = PaddleReference(args.vocab, args.d_model, args.heads, args.layers, args.d_ff, args.dropout, max_len)
    n_ours = sum(int(np.prod(p.shape)) for p in ours.parameters())
    n_ref = sum(int(np.prod(p.shape)) for p in ref.parameters())
    opt_ours = paddle.optimizer.Adam(1e-4, parameters=ours.parameters())
    opt_ref = paddle.optimizer.Adam(1e-4, parameters=ref.parameters())
    batches = make_batches(args.steps, args.batch, args.src_len, args.tgt_len, args.vocab, args.seed)

    # warm-up (allocator, kernels); then every batch is one step of each model, back to back, in
    # alternating order: a pair sees the same load from other processes, so the per-pair time ratio
    # cancels it (the median over pairs is reported)
    for b in batches[:2]:
        train_step_seconds(ours, opt_ours, b)
        train_step_seconds(ref, opt_ref, b)
    t_ours, t_ref = [], []
    for r in range(args.rounds):
        for i, b in enumerate(batches):
            if (r + i) % 2 == 0:
                t_ours.append(train_step_seconds(ours, opt_ours, b))
                t_ref.append(train_step_seconds(ref, opt_ref, b))
            else:
                t_ref.append(train_step_seconds(ref, opt_ref, b))
                t_ours.append(train_step_seconds(ours, opt_ours, b))
    tokens = [b[3] for _ in range(args.rounds) for b in batches]
    train_ours = statistics.median(n / t for n, t in zip(tokens, t_ours, strict=True))
    train_ref = statistics.median(n / t for n, t in zip(tokens, t_ref, strict=True))
    ratio = statistics.median(tr / to for to, tr in zip(t_ours, t_ref, strict=True))

    # decoding: cache vs full recomputation, same model and sources
    rng = np.random.RandomState(args.seed + 1)
    src = rng.randint(EOS_ID + 1, args.vocab, size=[args.decode_batch, args.src_len]).astype("int64")
    src[:, -1] = EOS_ID
    src = paddle.to_tensor(src)
    ours.eval()
    greedy_search(ours, src, 4, use_cache=True, eos_id=None)  # warm-up
    times = {True: [], False: []}
    outs = {}
    for r in range(max(1, args.rounds)):
        for use_cache in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            outs[use_cache] = greedy_search(ours, src, args.decode_len, use_cache=use_cache, eos_id=None)
            times[use_cache].append(time.perf_counter() - t0)
    n_dec = args.decode_batch * args.decode_len
    # the fastest of the alternating runs: the least disturbed by other processes
    dec_cache, dec_full = n_dec / min(times[True]), n_dec / min(times[False])
    same = bool((outs[True] == outs[False]).all())

    result = {
        "sizes": {"d_model": args.d_model, "heads": args.heads, "layers": args.layers, "d_ff": args.d_ff,
                  "vocab": args.vocab, "batch": args.batch, "src_len": args.src_len, "tgt_len": args.tgt_len},
        "params_ours": n_ours, "params_paddle": n_ref,
        "train_tokens_per_s_ours": round(train_ours, 1), "train_tokens_per_s_paddle": round(train_ref, 1),
        "train_ratio_ours_vs_paddle": round(ratio, 3), "train_steps_timed": len(t_ours),
        "decode_tokens_per_s_cache": round(dec_cache, 1), "decode_tokens_per_s_no_cache": round(dec_full, 1),
        "decode_speedup_cache": round(dec_cache / dec_full, 2), "decode_len": args.decode_len,
        "decode_outputs_identical": same, "threads": threads,
    }
    print(f"training  ours {train_ours:9.1f} tok/s   paddle.nn.Transformer {train_ref:9.1f} tok/s   "
          f"ratio {ratio:.3f}  (goal >= 0.9; median of {len(t_ours)} paired steps)")
    print(f"decoding  cache {dec_cache:8.1f} tok/s   no cache {dec_full:8.1f} tok/s   "
          f"speedup {dec_cache / dec_full:.2f}x at length {args.decode_len}  (goal >= 3)  identical={same}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
