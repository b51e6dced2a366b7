"""The Transformer part by part: attention, layers and masks against Paddle's own layers (copied weights),
positional encoding against the paper's formula, the label-smoothed loss against numpy, KV-cache decoding
against full recomputation, beam search against exhaustive search, data/batching/tokenizer round trips,
export graphs against dygraph."""
import copy
import gzip
import itertools

import numpy as np
import paddle
import pytest
from conftest import ROOT

from paddle_models import get_task, load_config
from paddle_models.registry import model_entry
from paddle_models.transformer import data as D
from paddle_models.transformer.decoding import (
    DecoderStepGraph,
    EncoderGraph,
    beam_search,
    export_greedy,
    greedy_search,
    length_penalty,
    sequence_logprob,
    strip_special,
)
from paddle_models.transformer.model import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    DecoderLayer,
    EncoderLayer,
    LearnedPositionalEncoding,
    MultiHeadAttention,
    PositionwiseFeedForward,
    Transformer,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    sinusoid_table,
)
from paddle_models.transformer.task import label_smoothed_nll

TOL = 1e-5


def _t(a):
    return paddle.to_tensor(a)


def _ids(rows, width):
    """Padded id batch from lists (each ends with EOS)."""
    out = np.zeros([len(rows), width], "int64")
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


SRC = _ids([[5, 6, 7, 8, 9, EOS_ID], [4, 10, EOS_ID], [11, 12, 13, 14, 15, 16, 17, EOS_ID]], 8)


def _model(**kw):
    args = dict(vocab_size=20, d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=48,
                dropout=0.0, max_len=40)
    args.update(kw)
    paddle.seed(kw.pop("seed", 0) if "seed" in kw else 0)
    m = Transformer(**args)
    m.eval()
    return m


# ---- attention ------------------------------------------------------------------------------------
def test_scaled_dot_product_attention_vs_numpy():
    r = np.random.RandomState(0)
    q, k, v = r.randn(2, 3, 4, 8), r.randn(2, 3, 6, 8), r.randn(2, 3, 6, 5)
    keep = r.rand(2, 1, 4, 6) > 0.3
    keep[..., 0] = True
    mask = np.where(keep, 0.0, -1e9)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8) + mask
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out, weights = scaled_dot_product_attention(*(_t(x.astype("float32")) for x in (q, k, v, mask)))
    np.testing.assert_allclose(weights.numpy(), w, atol=1e-6)
    np.testing.assert_allclose(out.numpy(), w @ v, atol=1e-5)
    assert np.all(weights.numpy()[np.broadcast_to(~keep, weights.shape)] < 1e-12)  # masked: no weight


@pytest.mark.parametrize("cross", [False, True])
def test_multi_head_attention_matches_paddle(cross):
    paddle.seed(1)
    ref = paddle.nn.MultiHeadAttention(32, 4)
    ours = MultiHeadAttention(32, 4)
    ours.set_state_dict(ref.state_dict())
    for name, p in ours.named_parameters():  # every weight really was copied
        np.testing.assert_array_equal(p.numpy(), ref.state_dict()[name].numpy())
    r = np.random.RandomState(2)
    x = _t(r.randn(3, 5, 32).astype("float32"))
    mem = _t(r.randn(3, 8, 32).astype("float32")) if cross else x
    ids = _t(SRC if cross else SRC[:, :5])
    bool_mask = (ids != PAD_ID).unsqueeze([1, 2])  # Paddle: True = attend
    got = ours(x, mem, mem, mask=padding_mask(ids))
    want = ref(x, mem, mem, attn_mask=bool_mask)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=TOL, rtol=TOL)
    # causal (float) mask on self-attention, too
    if not cross:
        np.testing.assert_allclose(ours(x, mask=causal_mask(5)).numpy(),
                                   ref(x, attn_mask=causal_mask(5)).numpy(), atol=TOL, rtol=TOL)


def _same_weights(ref_cls, our_cls, seed, normalize_before):
    """paddle's layer and ours (d_model 32, 4 heads, d_ff 64), ours given paddle's weights, both in eval mode."""
    paddle.seed(seed)
    ref = ref_cls(32, 4, 64, dropout=0.1, normalize_before=normalize_before)
    ours = our_cls(32, 4, 64, dropout=0.1, normalize_before=normalize_before)
    ours.set_state_dict(ref.state_dict())
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    ref.eval(), ours.eval()
    return ref, ours


@pytest.mark.parametrize("normalize_before", [False, True])
def test_encoder_layer_matches_paddle(normalize_before):
    ref, ours = _same_weights(paddle.nn.TransformerEncoderLayer, EncoderLayer, 3, normalize_before)
    x = _t(np.random.RandomState(4).randn(3, 8, 32).astype("float32"))
    ids = _t(SRC)
    np.testing.assert_allclose(ours(x, padding_mask(ids)).numpy(),
                               ref(x, (ids != PAD_ID).unsqueeze([1, 2])).numpy(), atol=TOL, rtol=TOL)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_decoder_layer_matches_paddle(normalize_before):
    ref, ours = _same_weights(paddle.nn.TransformerDecoderLayer, DecoderLayer, 5, normalize_before)
    r = np.random.RandomState(6)
    tgt, mem = _t(r.randn(3, 6, 32).astype("float32")), _t(r.randn(3, 8, 32).astype("float32"))
    ids = _t(SRC)
    want = ref(tgt, mem, tgt_mask=paddle.nn.Transformer.generate_square_subsequent_mask(None, 6),
               memory_mask=(ids != PAD_ID).unsqueeze([1, 2]))
    got = ours(tgt, mem, causal_mask(6), padding_mask(ids))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=TOL, rtol=TOL)


def test_whole_encoder_stack_matches_paddle_prenorm():
    """Pre-norm stack ends with a LayerNorm, like paddle.nn.TransformerEncoder(norm=LayerNorm)."""
    m = _model(normalize_before=True)
    layer = paddle.nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, normalize_before=True)
    ref = paddle.nn.TransformerEncoder(layer, 2, paddle.nn.LayerNorm(32))
    ref.set_state_dict({**{f"layers.{k[len('encoder_layers.'):]}": v for k, v in m.state_dict().items()
                           if k.startswith("encoder_layers.")},
                        **{f"norm.{k[len('encoder_norm.'):]}": v for k, v in m.state_dict().items()
                           if k.startswith("encoder_norm.")}})
    ref.eval()
    ids = _t(SRC)
    memory, mask = m.encode(ids)
    want = ref(m.embed(m.src_embed, ids), (ids != PAD_ID).unsqueeze([1, 2]))
    np.testing.assert_allclose(memory.numpy(), want.numpy(), atol=TOL, rtol=TOL)


def test_positionwise_ffn():
    paddle.seed(7)
    f = PositionwiseFeedForward(8, 16)
    x = np.random.RandomState(8).randn(2, 3, 8).astype("float32")
    w1, b1, w2, b2 = (p.numpy() for p in (f.linear1.weight, f.linear1.bias, f.linear2.weight, f.linear2.bias))
    np.testing.assert_allclose(f(_t(x)).numpy(), np.maximum(x @ w1 + b1, 0) @ w2 + b2, atol=1e-5)


# ---- positions, embeddings, masks -----------------------------------------------------------------
def test_sinusoidal_table_is_the_papers_formula():
    d = 16
    table = sinusoid_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            assert table[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / d)), abs=1e-6)
            assert table[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / d)), abs=1e-6)
    # PE(pos + k) is a linear (rotation) function of PE(pos): same k, same rotation for every pos
    k = 3
    a, b = table[:40], table[k: 40 + k]
    for i in range(d // 2):
        pairs_a, pairs_b = a[:, 2 * i: 2 * i + 2], b[:, 2 * i: 2 * i + 2]
        rot, *_ = np.linalg.lstsq(pairs_a, pairs_b, rcond=None)
        np.testing.assert_allclose(pairs_a @ rot, pairs_b, atol=1e-4)


def test_embeddings_scaled_shared_and_tied():
    m = _model()
    assert m.src_embed is m.tgt_embed and m.output_proj is None
    ids = _t(SRC[:1, :4])
    want = m.src_embed.weight.numpy()[SRC[0, :4]] * np.sqrt(32) + sinusoid_table(40, 32)[:4]
    np.testing.assert_allclose(m.embed(m.src_embed, ids).numpy()[0], want, atol=1e-5)
    h = _t(np.random.RandomState(0).randn(2, 3, 32).astype("float32"))
    np.testing.assert_allclose(m.project(h).numpy(), h.numpy() @ m.src_embed.weight.numpy().T, atol=1e-4)
    assert np.all(m.src_embed.weight.numpy()[PAD_ID] == 0)
    untied = _model(share_embeddings=False, tie_output=False, pos_encoding="learned")
    assert untied.src_embed is not untied.tgt_embed and untied.output_proj is not None
    assert isinstance(untied.pos_encoding, LearnedPositionalEncoding)

    def n(mm):
        return sum(int(np.prod(p.shape)) for p in mm.parameters())

    assert n(untied) - n(m) == 20 * 32 * 2 + 40 * 32  # second embedding + output matrix + position table


def test_padding_does_not_change_outputs():
    m = _model()
    tgt = _ids([[BOS_ID, 5, 6, 7], [BOS_ID, 8], [BOS_ID, 9, 10]], 4)
    full = m(_t(SRC), _t(tgt)).numpy()
    for i in range(3):
        s_len, t_len = int((SRC[i] != 0).sum()), int((tgt[i] != 0).sum())
        alone = m(_t(SRC[i: i + 1, :s_len]), _t(tgt[i: i + 1, :t_len])).numpy()
        np.testing.assert_allclose(alone[0], full[i, :t_len], atol=TOL)


def test_decoder_is_causal():
    m = _model()
    tgt = _ids([[BOS_ID, 5, 6, 7, 8]] * 3, 5)
    a = m(_t(SRC), _t(tgt)).numpy()
    tgt[:, 3] = 12
    b = m(_t(SRC), _t(tgt)).numpy()
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=TOL)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-4


def test_dropout_only_in_training():
    m = _model(dropout=0.3)
    tgt = _ids([[BOS_ID, 5, 6]] * 3, 3)
    e1, e2 = m(_t(SRC), _t(tgt)).numpy(), m(_t(SRC), _t(tgt)).numpy()
    np.testing.assert_array_equal(e1, e2)
    m.train()
    assert np.abs(m(_t(SRC), _t(tgt)).numpy() - e1).max() > 1e-3


def test_bad_arch_values():
    with pytest.raises(ValueError, match="divisible"):
        Transformer(10, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="Arch.activation"):
        Transformer(10, d_model=8, num_heads=2, activation="swish")
    with pytest.raises(ValueError, match="pos_encoding"):
        Transformer(10, d_model=8, num_heads=2, pos_encoding="rotary")


# ---- loss -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_label_smoothed_loss_vs_numpy(eps):
    r = np.random.RandomState(9)
    logits = r.randn(3, 5, 11).astype("float32") * 3
    target = r.randint(1, 11, size=[3, 5]).astype("int64")
    target[0, 3:] = PAD_ID
    target[2, 1:] = PAD_ID
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    q = np.full(logits.shape, eps / 11)
    q[np.arange(3)[:, None], np.arange(5)[None], target] += 1 - eps
    per_tok = -(q * lp).sum(-1)
    keep = target != PAD_ID
    x = _t(logits)
    x.stop_gradient = False
    loss, nll, ntok = label_smoothed_nll(x, _t(target), eps)
    assert float(loss) == pytest.approx(per_tok[keep].mean(), rel=1e-5)
    assert float(nll) == pytest.approx(-lp[np.arange(3)[:, None], np.arange(5)[None], target][keep].mean(), rel=1e-5)
    assert float(ntok) == keep.sum()
    loss.backward()  # gradient of smoothed CE: (softmax - q) / n on kept tokens, 0 on padding
    grad = (np.exp(lp) - q) * keep[..., None] / keep.sum()
    np.testing.assert_allclose(x.grad.numpy(), grad, atol=1e-6)
    # Paddle's own label smoothing (uniform over the vocabulary) gives the same mean
    ref = paddle.nn.functional.cross_entropy(_t(logits[keep]), _t(target[keep]), label_smoothing=eps)
    assert float(loss) == pytest.approx(float(ref), rel=1e-5)


# ---- decoding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"normalize_before": True, "pos_encoding": "learned"}])
def test_kv_cache_step_logits_equal_full_recomputation(kw):
    m = _model(**kw)
    src = _t(SRC)
    memory, mmask = m.encode(src)
    tgt = _ids([[BOS_ID, 5, 9, 11, 4, 6, 7]] * 3, 7)
    full = m.decode(_t(tgt), memory, mmask).numpy()
    cache = m.init_cache(memory)
    for t in range(tgt.shape[1]):
        step = m.decode(_t(tgt[:, t: t + 1]), memory, mmask, cache, start=t).numpy()
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=TOL, rtol=TOL)
        assert cache[0]["k"].shape[2] == t + 1
    # several new positions at once on top of a cache
    cache = m.init_cache(memory)
    m.decode(_t(tgt[:, :3]), memory, mmask, cache, start=0)
    rest = m.decode(_t(tgt[:, 3:]), memory, mmask, cache, start=3).numpy()
    np.testing.assert_allclose(rest, full[:, 3:], atol=TOL, rtol=TOL)


def _sharp_model(seed=0, **kw):
    """A random model with larger output logits, so decoding paths differ between sentences."""
    m = _model(**kw)
    r = np.random.RandomState(seed)
    m.src_embed.weight.set_value((r.randn(20, 32) * 0.6).astype("float32"))
    return m


def test_greedy_with_cache_equals_without():
    m = _sharp_model()
    a = greedy_search(m, SRC, 12, use_cache=True)
    b = greedy_search(m, SRC, 12, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(r) for r in a.tolist()}) > 1  # not a degenerate constant output


def test_decoding_stops_at_eos():
    m = _model(tie_output=False, share_embeddings=False)
    w = np.zeros([32, 20], "float32")
    w[:, EOS_ID] = 1.0
    m.output_proj.weight.set_value(w)
    last = m.decoder_layers[-1].norm3
    last.weight.set_value(np.zeros([32], "float32"))
    last.bias.set_value(np.ones([32], "float32"))  # every position: EOS logit 32, the rest 0
    out = greedy_search(m, SRC, 30)
    assert out.shape == (3, 1) and (out[:, 0] == EOS_ID).all()
    out = beam_search(m, SRC, 3, 30)
    assert out.shape == (3, 1) and (out[:, 0] == EOS_ID).all()
    # EOS at different steps: rows that finished get PAD afterwards
    rows = np.array([[5, 6, EOS_ID, 0, 0], [EOS_ID, 0, 0, 0, 0]])
    assert strip_special(rows[0]) == [5, 6] and strip_special(rows[1]) == []


def test_beam_of_one_is_greedy_and_cache_matches():
    m = _sharp_model(1)
    np.testing.assert_array_equal(beam_search(m, SRC, 1, 10, alpha=0.0), greedy_search(m, SRC, 10))
    a = beam_search(m, SRC, 4, 10, alpha=0.6, use_cache=True)
    b = beam_search(m, SRC, 4, 10, alpha=0.6, use_cache=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_finds_the_exhaustive_best(alpha):
    """Vocabulary of 6, 3 output tokens: a beam of 36 keeps every prefix, so it must return the
    sequence with the best length-normalized log-probability among all 6+36+216 candidates."""
    paddle.seed(11)
    m = Transformer(6, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=16, dropout=0.0,
                    max_len=8)
    m.eval()
    m.src_embed.weight.set_value((np.random.RandomState(12).randn(6, 16) * 2).astype("float32"))
    src = np.array([[4, 5, 4, EOS_ID], [5, 5, EOS_ID, 0]], "int64")
    got = beam_search(m, src, 36, 3, alpha=alpha)
    for b in range(2):
        cands = []
        for length in (1, 2, 3):
            for seq in itertools.product(range(6), repeat=length):
                if EOS_ID in seq[:-1]:
                    continue  # a hypothesis ends at its first EOS
                if length < 3 and seq[-1] != EOS_ID:
                    continue  # shorter than max_len only when ended by EOS
                cands.append(seq)
        hyp = _ids([list(c) for c in cands], 3)
        lp = sequence_logprob(m, np.repeat(src[b: b + 1], len(cands), 0), hyp)
        lens = np.array([len(c) for c in cands], "float64")
        best = cands[int(np.argmax(lp / length_penalty(lens, alpha)))]
        assert strip_special(got[b]) == strip_special(list(best) + [EOS_ID]), (b, got[b], best)


# ---- export graphs --------------------------------------------------------------------------------
def test_export_graphs_save_load_and_greedy(tmp_path):
    m = _sharp_model(2)
    from paddle.static import InputSpec

    enc, step = EncoderGraph(m), DecoderStepGraph(m)
    kv = [None, 2, 4, None, 8]
    enc_spec = [InputSpec([None, None], "int64", "src_ids")]
    step_spec = [InputSpec([None, 1], "int64", "token"), InputSpec(kv, "float32", "memory_k"),
                 InputSpec(kv, "float32", "memory_v"), InputSpec([None, 1, 1, None], "float32", "memory_mask"),
                 InputSpec(kv, "float32", "cache_k"), InputSpec(kv, "float32", "cache_v")]
    paddle.jit.save(paddle.jit.to_static(enc, input_spec=enc_spec, full_graph=True), str(tmp_path / "enc"))
    paddle.jit.save(paddle.jit.to_static(step, input_spec=step_spec, full_graph=True), str(tmp_path / "step"))
    enc_l, step_l = paddle.jit.load(str(tmp_path / "enc")), paddle.jit.load(str(tmp_path / "step"))
    out = export_greedy(lambda s: [o.numpy() for o in enc_l(_t(s))],
                        lambda *a: [o.numpy() for o in step_l(*[_t(x) for x in a])], SRC, 12, 2, 4, 8)
    ref = greedy_search(m, SRC, 12)
    np.testing.assert_array_equal(out, ref[:, : out.shape[1]])


def test_whole_model_exports_with_dynamic_lengths(tmp_path):
    cfg = _small_cfg(tmp_path, kind="toy")
    task = get_task("transformer")(cfg)
    paddle.seed(0)
    model = task.build_model()
    model.eval()
    spec = task.export_input_spec(model)
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), str(tmp_path / "m"))
    loaded = paddle.jit.load(str(tmp_path / "m"))
    for bs, s, t in ((2, 7, 5), (1, 3, 9), (4, 11, 2)):
        r = np.random.RandomState(bs)
        src = r.randint(4, 24, size=[bs, s]).astype("int64")
        tgt = r.randint(4, 24, size=[bs, t]).astype("int64")
        with paddle.no_grad():
            want = model(_t(src), _t(tgt)).numpy()
        np.testing.assert_allclose(loaded(_t(src), _t(tgt)).numpy(), want, rtol=1e-5, atol=1e-5)
    variants = task.export_variants(model)
    assert set(variants) == {"model", "encoder", "decoder_step"}
    for layer, vspec, ex in variants.values():
        assert [s.name for s in vspec] == list(ex)
        layer(*[_t(ex[s.name]) for s in vspec])  # the example runs through the dygraph layer


# ---- data -----------------------------------------------------------------------------------------
def test_read_lines_plain_and_gzip(tmp_path):
    text = "Ein Hund läuft.\nZwei Männer\n\nletzte Zeile"
    (tmp_path / "a.txt").write_text(text + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    assert D.read_lines(str(tmp_path / "a.txt")) == D.read_lines(str(tmp_path / "a.gz")) == text.split("\n")
    (tmp_path / "b.txt").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.txt has 4 lines but .*b\.txt has 2"):
        D.read_parallel(str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(ValueError, match=r"bad\.txt: line 2: not valid UTF-8"):
        D.read_lines(str(tmp_path / "bad.txt"))
    with pytest.raises(FileNotFoundError, match=r"missing\.gz: file not found"):
        D.read_lines(str(tmp_path / "missing.gz"))


def test_token_batches_cover_everything_within_budget():
    r = np.random.RandomState(0)
    lengths = [(int(a), int(b)) for a, b in zip(r.randint(1, 30, 500), r.randint(1, 30, 500), strict=True)]
    lengths.append((200, 3))  # longer than the budget alone
    batches = D.token_batches(lengths, max_tokens=120, seed=1)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * (max(max(lengths[i]) for i in b) + 1)
        assert padded <= 120 or len(b) == 1
    # length-sorted: little padding (target lengths within a batch are close)
    spread = [max(lengths[i][1] for i in b) - min(lengths[i][1] for i in b) for b in batches]
    assert np.mean(spread) <= 2
    assert D.token_batches(lengths, 120, seed=1) == batches  # seeded
    assert max(len(b) for b in D.token_batches(lengths, 10000, max_sentences=7)) == 7


def test_collate_adds_specials_and_pads():
    ex = [(np.array([5, 6, 7]), np.array([8, 9]), "r1"), (np.array([5]), np.array([4, 4, 4, 4]), "r2")]
    b = D.collate(ex)
    np.testing.assert_array_equal(b["src_ids"], [[5, 6, 7, EOS_ID], [5, EOS_ID, 0, 0]])
    np.testing.assert_array_equal(b["tgt_in"], [[BOS_ID, 8, 9, 0, 0], [BOS_ID, 4, 4, 4, 4]])
    np.testing.assert_array_equal(b["tgt_out"], [[8, 9, EOS_ID, 0, 0], [4, 4, 4, 4, EOS_ID]])
    assert b["ref"].tolist() == ["r1", "r2"] and b["src_ids"].dtype == np.int64


def test_toy_task_data():
    ex = D.make_toy_examples(200, "reverse", 14, 3, 8, seed=0)
    for s, t, ref in ex:
        assert 3 <= len(s) <= 8 and s.min() >= 4 and s.max() <= 13
        np.testing.assert_array_equal(t, s[::-1])
        assert ref == " ".join(map(str, t))
    held = {tuple(s.tolist()) for s, _, _ in ex}
    other = D.make_toy_examples(300, "copy", 14, 3, 8, seed=1, exclude=held)
    assert not held & {tuple(s.tolist()) for s, _, _ in other}
    with pytest.raises(ValueError, match="toy_task"):
        D.make_toy_examples(1, "sort", 14, 3, 8, 0)


def test_sentencepiece_roundtrip_and_ids(tmp_path):
    r = np.random.RandomState(0)
    words = ["ein", "Hund", "läuft", "über", "die", "Wiese", "a", "dog", "runs", "across", "the", "meadow",
             "zwei", "Männer", "two", "men", "spielen", "play", "Fußball", "football"]
    lines = [" ".join(r.choice(words, r.randint(3, 9))) + "." for _ in range(400)]
    (tmp_path / "c.txt").write_text("\n".join(lines), encoding="utf-8")
    path = D.train_sentencepiece([str(tmp_path / "c.txt")], str(tmp_path / "sp" / "spm"), vocab_size=50)
    tok = D.SpmTokenizer(path)
    assert tok.vocab_size == 50
    assert [tok.sp.id_to_piece(i) for i in (PAD_ID, D.UNK_ID, BOS_ID, EOS_ID)] == ["<pad>", "<unk>", "<s>", "</s>"]
    for line in lines[:50]:
        ids = tok.encode(line)
        assert min(ids) > EOS_ID
        assert tok.decode(ids) == line
    with pytest.raises(ValueError, match=r"SentencePiece training on .*c\.txt failed: .*Vocabulary size too high"):
        D.train_sentencepiece([str(tmp_path / "c.txt")], str(tmp_path / "sp2" / "spm"), vocab_size=5000)


# ---- config and task ------------------------------------------------------------------------------
def _small_cfg(tmp_path, kind="toy", extra=None):
    data = copy.deepcopy(model_entry("transformer")["small_config"])
    data["Arch"]["name"] = "transformer"
    data["Global"] = {"output_dir": str(tmp_path / "run")}
    data["Data"] = {"kind": kind, "toy_train_size": 64, "toy_val_size": 16, "max_tokens": 0}
    for k, v in (extra or {}).items():
        data.setdefault(k, {}).update(v)
    return load_config(data=data)


@pytest.mark.parametrize("name", ["copy_toy", "multi30k_small", "base_paper"])
def test_configs_load(name):
    cfg = load_config(str(ROOT / "configs" / "transformer" / f"{name}.yaml"))
    assert cfg["_family"] == "transformer" and cfg["Arch"]["d_model"] % cfg["Arch"]["num_heads"] == 0


def test_config_rejects_unknown_keys(tmp_path):
    from paddle_models.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key 'Decode.beam'.*did you mean 'Decode.beam_size'"):
        load_config(str(ROOT / "configs" / "transformer" / "copy_toy.yaml"), ["Decode.beam=4"])
    with pytest.raises(ValueError, match="Data.kind"):
        get_task("transformer")(_small_cfg(tmp_path, kind="wmt"))


def test_task_steps_and_metrics(tmp_path):
    cfg = _small_cfg(tmp_path)
    task = get_task("transformer")(cfg)
    task.prepare(str(tmp_path / "run"))
    assert task.best_metric == "exact_match" and task.best_mode == "max"
    model = task.build_model()
    ds = task.dataset("train")
    batch = task.collate_fn("train")([ds[i] for i in range(8)])
    tens = {k: (_t(v) if v.dtype.kind in "iu" else v) for k, v in batch.items()}
    model.train()
    loss, logs = task.forward_loss(model, tens)
    loss.backward()
    assert np.isfinite(float(loss)) and logs["tokens"] == (batch["tgt_out"] != 0).sum()
    model.eval()
    out = task.predict_step(model, tens)
    assert out["hyp"].shape == (8,) and out["ref"].tolist() == batch["ref"].tolist()
    metrics = task.compute_metrics(out)
    assert 0.0 <= metrics["exact_match"] <= 1.0 and metrics["nll"] > 0
    # exact match and BLEU on known strings
    perfect = task.compute_metrics({"hyp": out["ref"], "ref": out["ref"], "nll_sum": np.ones(8), "ntok": np.ones(8)})
    assert perfect["exact_match"] == 1.0 and perfect["nll"] == 1.0
    mt = get_task("transformer")(_small_cfg(tmp_path, kind="multi30k"))
    refs = np.array(["Ein Hund läuft über die Wiese.", "Zwei Männer spielen Fußball im Park."], dtype=object)
    hyps = np.array(["Ein Hund rennt über die Wiese.", "Zwei Männer spielen Fußball im Park."], dtype=object)
    import sacrebleu

    m = mt.compute_metrics({"hyp": hyps, "ref": refs, "nll_sum": np.ones(2), "ntok": np.ones(2)})
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)
    assert m["exact_match"] == 0.5


@pytest.fixture
def multi30k(shared_data):
    d = shared_data / "multi30k"
    if not (d / "train.en.gz").is_file():
        pytest.skip(f"Multi30k not found under {d}")
    return d


def test_multi30k_reader_and_vocab_reuse(multi30k, tmp_path):
    """Real files: line counts, a small joint vocabulary trained by the task, val examples keep the raw
    reference text; a second task (evaluation) reuses the vocabulary found beside the checkpoint."""
    src, tgt = D.read_parallel(str(multi30k / "val.en.gz"), str(multi30k / "val.de.gz"))
    assert len(src) == len(tgt) == 1014
    # a small vocabulary from the first 3000 training lines (fast), through the tool's function
    head = tmp_path / "head"
    head.mkdir()
    for lang in ("en", "de"):
        (head / f"train.{lang}").write_text("\n".join(D.read_lines(str(multi30k / f"train.{lang}.gz"))[:3000]),
                                            encoding="utf-8")
    extra = {"Arch": {"vocab_size": 500, "max_len": 64},
             "Data": {"data_dir": str(multi30k), "train_src": str(head / "train.en"),
                      "train_tgt": str(head / "train.de"), "max_tokens": 512}}
    cfg = _small_cfg(tmp_path, kind="multi30k", extra=extra)
    task = get_task("transformer")(cfg)
    task.prepare(str(tmp_path / "run"))
    assert (tmp_path / "run" / "spm.model").is_file() and task.tokenizer.vocab_size == 500
    val = task.examples("val")
    assert len(val) == 1014 and [e[2] for e in val] == tgt
    assert task.tokenizer.decode(val[0][0].tolist()) == src[0]
    train = task.dataset("train")
    too_long = sum(1 for a, b in zip(task.tokenizer.encode_batch(D.read_lines(str(head / "train.en"))),
                                     task.tokenizer.encode_batch(D.read_lines(str(head / "train.de"))),
                                     strict=True)
                   if max(len(a), len(b)) > 63)
    assert len(train) == 3000 - too_long
    batches = task.batch_sampler("train", train, 32, seed=0).batches(0)  # token batches (Data.max_tokens)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(train)))
    assert task.run_summary().get("train_pairs_skipped", 0) == too_long
    # evaluation from another output folder: the vocabulary beside the checkpoint is used
    ckpt = tmp_path / "run" / "checkpoints" / "best"
    ckpt.mkdir(parents=True)
    cfg2 = _small_cfg(tmp_path, kind="multi30k", extra={**extra, "Global": {
        "output_dir": str(tmp_path / "eval"), "checkpoint": str(ckpt / "model.safetensors")}})
    t2 = get_task("transformer")(cfg2)
    t2.prepare(str(tmp_path / "eval"))
    assert open(t2.tokenizer.path, "rb").read() == open(tmp_path / "run" / "spm.model", "rb").read()
    with pytest.raises(ValueError, match=r"vocabulary has 500 pieces but Arch.vocab_size is 400"):
        get_task("transformer")(_small_cfg(tmp_path, kind="multi30k", extra={
            "Arch": {"vocab_size": 400}, "Data": {"spm_model": str(tmp_path / "run" / "spm.model")}})).prepare(
            str(tmp_path / "x"))
