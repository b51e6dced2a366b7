"""FTRL-Proximal (paddle_models/engine/ftrl.py) step by step against a numpy implementation of the paper's
Algorithm 1, against Paddle's own ``ftrl`` kernel, and as a Paddle optimizer (state dict, schedulers)."""
import numpy as np
import paddle
import pytest

from paddle_models.engine.ftrl import FTRL


def ftrl_numpy(w, n, z, g, alpha, l1, l2, lr_power, beta):
    """McMahan et al. 2013, Algorithm 1, per coordinate (generalised from sqrt to n^-lr_power)."""
    w, n, z = w.astype(np.float64).copy(), n.astype(np.float64).copy(), z.astype(np.float64).copy()
    for i in np.ndindex(w.shape):
        gi = float(g[i])
        n_new = n[i] + gi * gi
        sigma = (n_new ** (-lr_power) - n[i] ** (-lr_power)) / alpha
        z[i] += gi - sigma * w[i]
        n[i] = n_new
        if abs(z[i]) <= l1:
            w[i] = 0.0
        else:
            w[i] = -(z[i] - np.sign(z[i]) * l1) / ((beta + n[i] ** (-lr_power)) / alpha + l2)
    return w, n, z


def _run(params, grads_per_step, **kw):
    """Apply FTRL to a parameter whose loss gradient is forced to the given values at each step."""
    p = paddle.create_parameter(list(params.shape), "float32",
                                default_initializer=paddle.nn.initializer.Assign(params))
    opt = FTRL(parameters=[p], **kw)
    states = []
    for g in grads_per_step:
        loss = (p * paddle.to_tensor(g.astype("float32"))).sum()  # d loss / d p = g
        loss.backward()
        opt.step()
        opt.clear_grad()
        acc = opt._accumulators
        n = acc[FTRL._squared_acc_str][p.name].numpy()
        z = acc[FTRL._linear_acc_str][p.name].numpy()
        states.append((p.numpy().copy(), n.copy(), z.copy()))
    return p, opt, states


@pytest.mark.parametrize("l1,l2,lr_power,beta,alpha", [
    (0.0, 0.0, -0.5, 1.0, 0.1),
    (0.05, 0.0, -0.5, 1.0, 0.1),     # L1: some coordinates exactly zero
    (0.02, 0.3, -0.5, 0.5, 0.05),
    (0.01, 0.1, -0.3, 1.0, 0.2),     # a learning-rate power other than the paper's -0.5
    (0.0, 0.0, 0.0, 1.0, 0.1),       # lr_power 0: a constant per-coordinate rate
])
def test_step_by_step_matches_numpy(l1, l2, lr_power, beta, alpha):
    rng = np.random.RandomState(0)
    w0 = rng.randn(6, 3).astype("float32") * 0.1
    grads = [rng.randn(6, 3) * s for s in (1.0, 0.3, 0.05, 0.7, 0.01, 0.4)]
    _, _, states = _run(w0, grads, learning_rate=alpha, l1=l1, l2=l2, lr_power=lr_power, beta=beta)
    w, n, z = w0.astype(np.float64), np.zeros_like(w0, np.float64), np.zeros_like(w0, np.float64)
    for step, g in enumerate(grads):
        w, n, z = ftrl_numpy(w, n, z, g, alpha, l1, l2, lr_power, beta)
        pw, pn, pz = states[step]
        np.testing.assert_allclose(pn, n, rtol=1e-5, atol=1e-6, err_msg=f"n after step {step}")
        np.testing.assert_allclose(pz, z, rtol=1e-4, atol=1e-5, err_msg=f"z after step {step}")
        np.testing.assert_allclose(pw, w, rtol=1e-4, atol=1e-6, err_msg=f"w after step {step}")


def test_l1_gives_exact_zeros():
    """Coordinates whose accumulated gradient |z| stays within l1 are exactly 0 (the paper's sparsity)."""
    rng = np.random.RandomState(1)
    w0 = np.zeros((200,), "float32")
    scale = np.where(np.arange(200) < 100, 0.01, 1.0)  # half the coordinates get tiny gradients
    grads = [rng.randn(200) * scale for _ in range(5)]
    p, _, states = _run(w0, grads, learning_rate=0.1, l1=0.5, l2=0.0, lr_power=-0.5, beta=1.0)
    w = states[-1][0]
    z = states[-1][2]
    assert np.all(w[np.abs(z) <= 0.5] == 0.0)
    assert np.all(w[:100] == 0.0)            # small gradients: never leave zero
    assert np.count_nonzero(w[100:]) > 50    # large ones do
    # without L1 nothing is exactly zero
    _, _, dense = _run(w0, grads, learning_rate=0.1, l1=0.0)
    assert np.count_nonzero(dense[-1][0]) == 200


def test_matches_paddle_ftrl_kernel():
    """With beta = 0 the update is Paddle's ftrl kernel, whose L2 term is 2 * l2."""
    rng = np.random.RandomState(2)
    w0 = rng.randn(5, 4).astype("float32")
    grads = [rng.randn(5, 4) for _ in range(4)]
    l1, l2k, lr, init = 0.05, 0.1, 0.2, 0.1
    _, _, states = _run(w0, grads, learning_rate=lr, l1=l1, l2=2 * l2k, lr_power=-0.5, beta=0.0,
                        initial_accumulator_value=init)
    p = paddle.to_tensor(w0)
    sq = paddle.full([5, 4], init)
    lin = paddle.zeros([5, 4])
    for step, g in enumerate(grads):
        p, sq, lin = paddle._C_ops.ftrl(p, sq, lin, paddle.to_tensor(g.astype("float32")),
                                        paddle.to_tensor([lr], dtype="float32"), l1, l2k, -0.5)
        np.testing.assert_allclose(states[step][0], p.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(states[step][2], lin.numpy(), rtol=1e-4, atol=1e-6)


def test_state_dict_round_trip_continues_identically():
    rng = np.random.RandomState(3)
    w0 = rng.randn(4).astype("float32")
    grads = [rng.randn(4) for _ in range(4)]
    kw = dict(learning_rate=0.1, l1=0.01, l2=0.1)
    _, _, full = _run(w0, grads, **kw)
    with paddle.utils.unique_name.guard():  # a fresh process: the same parameter/accumulator names
        p, opt, _ = _run(w0, grads[:2], **kw)
    saved = opt.state_dict()
    assert any("squared" in k for k in saved) and any("linear" in k for k in saved)
    # a fresh optimizer restored from the state dict continues exactly like the uninterrupted one
    with paddle.utils.unique_name.guard():
        p2 = paddle.create_parameter([4], "float32", default_initializer=paddle.nn.initializer.Assign(p.numpy()))
        opt2 = FTRL(parameters=[p2], **kw)
        opt2.set_state_dict(saved)
        for g in grads[2:]:
            (p2 * paddle.to_tensor(g.astype("float32"))).sum().backward()
            opt2.step()
            opt2.clear_grad()
    np.testing.assert_allclose(p2.numpy(), full[-1][0], rtol=1e-5, atol=1e-7)


def test_is_a_paddle_optimizer_with_scheduler():
    p = paddle.create_parameter([3], "float32")
    sched = paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5)
    opt = FTRL(learning_rate=sched, parameters=[p])
    assert isinstance(opt, paddle.optimizer.Optimizer)
    assert opt.get_lr() == pytest.approx(0.1)
    sched.step()
    assert opt.get_lr() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lr_power"):
        FTRL(parameters=[p], lr_power=0.5)


def test_widedeep_one_step_updates_each_part_with_its_own_optimizer(tmp_path):
    """Wide&Deep: one training step moves the wide weights by FTRL and the deep ones by AdaGrad."""
    from paddle_models.config import _merge, load_config
    from paddle_models.engine.loader import to_tensors
    from paddle_models.registry import get_task, model_entry

    data = _merge(model_entry("widedeep")["small_config"],
                  {"Arch": {"name": "widedeep"}, "Optimizer": {"name": "Adagrad", "lr": 0.05,
                                                                "wide": {"lr": 0.1, "l1": 0.0}}})
    task = get_task("rec")(load_config(data=data))
    task.prepare(str(tmp_path))
    model = task.build_model()
    opts, _ = task.build_optimizers(model, 10)
    kinds = sorted(type(o).__name__ for o in opts)
    assert kinds == ["Adagrad", "FTRL"]
    wide_ids = {id(p) for p in model.wide_parameters()}
    for o in opts:  # disjoint parameter sets covering the model
        ids = {id(p) for p in o._parameter_list}
        assert ids == wide_ids if isinstance(o, FTRL) else not (ids & wide_ids)
    assert sum(len(o._parameter_list) for o in opts) == len(model.parameters())
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    batch = to_tensors(task.dataset("train").batch(list(range(32))))
    loss, _ = task.forward_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    for o in opts:
        o.step()
        o.clear_grad()
    # the wide weights follow FTRL from n = z = 0 ...
    for n, p in model.wide.named_parameters():
        full = "wide." + n
        w, _, _ = ftrl_numpy(before[full], np.zeros_like(before[full]), np.zeros_like(before[full]),
                             grads[full], 0.1, 0.0, 0.0, -0.5, 1.0)
        np.testing.assert_allclose(p.numpy(), w, rtol=1e-4, atol=1e-6)
    # ... the deep ones AdaGrad: w - lr * g / (sqrt(g^2) + eps)
    for n, p in model.named_parameters():
        if n.startswith("wide."):
            continue
        g = grads[n]
        want = before[n] - 0.05 * g / (np.sqrt(g * g) + 1e-8)
        np.testing.assert_allclose(p.numpy(), want, rtol=1e-4, atol=1e-6, err_msg=n)


def test_plateau_scale():
    from paddle_models.engine.optim import PlateauScale

    s = PlateauScale(1e-3, factor=0.1, min_lr=1e-6)
    assert s() == pytest.approx(1e-3)
    assert not s.observe(0.90)          # first value: the best so far
    assert not s.observe(0.91)
    assert s.observe(0.905) and s() == pytest.approx(1e-4)   # no improvement: x0.1
    s.step()
    assert s() == pytest.approx(1e-4)   # steps keep the scaled value
    assert s.observe(0.91) and s() == pytest.approx(1e-5)    # equal is not better
    assert not s.observe(0.92) and s() == pytest.approx(1e-5)
    s.observe(0.0), s.observe(0.0), s.observe(0.0)
    assert s() == pytest.approx(1e-6)   # floor
    state = s.state_dict()
    s2 = PlateauScale(1e-3, factor=0.1, min_lr=1e-6)
    s2.set_state_dict(state)
    assert (s2.scale, s2.best, s2()) == (s.scale, s.best, s())
    # around another schedule: its value times the scale
    inner = paddle.optimizer.lr.LambdaDecay(1.0, lambda step: 1.0 / (step + 1))
    w = PlateauScale(inner, factor=0.5)
    assert w() == pytest.approx(1.0)
    w.step()
    assert w() == pytest.approx(0.5)
    w.observe(1.0), w.observe(0.5)
    assert w() == pytest.approx(0.25)
    w2 = PlateauScale(paddle.optimizer.lr.LambdaDecay(1.0, lambda step: 1.0 / (step + 1)), factor=0.5)
    w2.set_state_dict(w.state_dict())
    w.step(), w2.step()
    assert w2() == pytest.approx(w()) == pytest.approx(0.5 / 3)


def test_widedeep_trimmed_embedding_trains_like_the_full_table(tmp_path):
    """The deep embedding table holds only the rows embedded columns can index (not the crosses' rows,
    which only the wide part reads). Against the previous code path (the table over the whole shared id
    space) with the same initial weights and batches: after several steps of FTRL (L1) + AdaGrad (weight
    decay on the embeddings, gradient clipping, dropout, batch norm) every weight, every batch-norm
    statistic and every prediction is bit for bit the same. The comparison is exact under two conditions
    that keep kernels from rounding by tensor size: one thread, and tables whose sizes are multiples of the
    SIMD width (``embedding_dim`` 16): Paddle's AdaGrad kernel (Eigen, fast-math ``sqrt``) takes a scalar
    path for the last ``size % packet`` elements, which may round the last bit differently, and AdaGrad's
    ``g / sqrt(g^2)`` turns such noise into full-size steps on the biases batch norm cancels."""
    import dataclasses
    import os

    from paddle_models.config import _merge, load_config
    from paddle_models.engine.loader import to_tensors
    from paddle_models.registry import build_model, get_task, model_entry

    data = _merge(model_entry("widedeep")["small_config"],
                  {"Arch": {"name": "widedeep", "embedding_dim": 16, "embedding_regularizer": 0.2, "net_dropout": 0.3,
                            "batch_norm": True},
                   "Optimizer": {"name": "Adagrad", "lr": 0.05, "grad_clip": 1.0,
                                 "wide": {"lr": 0.1, "l1": 0.001, "beta": 1.0}}})
    task = get_task("rec")(load_config(data=data))
    task.prepare(str(tmp_path))
    layout = task.data.prepare().layout()
    assert layout.num_wide > 0 and layout.embed_rows < layout.vocab_size  # the crosses' rows are left out
    full = dataclasses.replace(layout, embed_vocab_size=0)                # the previous table: every row
    assert full.embed_rows == layout.vocab_size
    fast, ref = build_model(task.cfg, layout=layout), build_model(task.cfg, layout=full)
    assert fast.embedding.weight.shape == [layout.embed_rows, 16]
    ref_state = ref.state_dict()
    for k, v in fast.state_dict().items():  # same initial weights; the reference's extra rows stay random
        w = ref_state[k].numpy()
        w[:v.shape[0]] = v.numpy()
        ref_state[k].set_value(w)
    ds = task.dataset("train")
    batches = [to_tensors(ds.batch(np.random.RandomState(s).randint(0, len(ds), 64))) for s in range(6)]

    def train(model):
        model.train()
        opts, _ = task.build_optimizers(model, 100)
        np.random.seed(7)  # the dropout masks
        for b in batches:
            loss, _ = task.forward_loss(model, b)
            loss.backward()
            for o in opts:
                o.step()
                o.clear_grad()
        model.eval()
        with paddle.no_grad():
            return model(*task._ctr_inputs(batches[0])).numpy()

    paddle.base.core.set_num_threads(1)
    try:
        p_fast, p_ref = train(fast), train(ref)
    finally:
        paddle.base.core.set_num_threads(os.cpu_count() or 1)  # the Trainer's default
    np.testing.assert_array_equal(p_fast, p_ref)
    ref_state = ref.state_dict()
    start = {k: v.numpy() for k, v in build_model(task.cfg, layout=layout).state_dict().items()}
    for k, v in fast.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ref_state[k].numpy()[:v.shape[0]], err_msg=k)
    assert np.abs(fast.embedding.weight.numpy() - start["embedding.weight"]).max() > 1e-3  # it did train
    # weights saved by the previous layout (the full table) load into the trimmed model: the unread rows are
    # dropped and its predictions are the full model's
    from safetensors.numpy import save_file

    from paddle_models.engine.checkpoint import load_model_weights

    saved = tmp_path / "old_widedeep.safetensors"
    save_file({k: np.ascontiguousarray(v.numpy()) for k, v in ref.state_dict().items()}, str(saved))
    fresh = build_model(task.cfg, layout=layout)
    load_model_weights(fresh, str(saved))
    fresh.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(fresh(*task._ctr_inputs(batches[1])).numpy(),
                                      ref(*task._ctr_inputs(batches[1])).numpy())
