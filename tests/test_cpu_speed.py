"""The CPU speed levers: runtime.tune_cpu() and the fast Linear backward. Behaviour only (what is set,
what is computed); their speed is measured by benchmarks/multimodal_step.py, never asserted here."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from conftest import ROOT

from paddle_models.engine.fast_linear import linear_with_fast_grad, use_fast_linear_grad
from paddle_models.runtime import cpu_info


def _grads(layer, x_np, x_grad):
    x = paddle.to_tensor(x_np, stop_gradient=not x_grad)
    out = layer(x)
    (out * out).sum().backward()
    gs = {n: (None if p.grad is None else p.grad.numpy()) for n, p in layer.named_parameters()}
    return out.numpy(), gs, (None if x.grad is None else x.grad.numpy())


@pytest.mark.parametrize("bias,freeze_w,x_grad,shape", [
    (True, False, True, (3, 5, 16)), (True, True, True, (4, 16)), (True, False, False, (2, 3, 4, 16)),
    (False, False, True, (6, 16))])
def test_fast_linear_matches_paddle_linear(bias, freeze_w, x_grad, shape):
    paddle.seed(1)
    ref = paddle.nn.Linear(16, 8, bias_attr=None if bias else False)
    fast = paddle.nn.Linear(16, 8, bias_attr=None if bias else False)
    fast.set_state_dict(ref.state_dict())
    if freeze_w:
        ref.weight.stop_gradient = fast.weight.stop_gradient = True
    assert use_fast_linear_grad(fast) == 1
    assert repr(fast) == repr(ref)  # the printed network (compare_arch) is unchanged
    x = np.random.RandomState(0).randn(*shape).astype("float32")
    out_r, g_r, dx_r = _grads(ref, x, x_grad)
    out_f, g_f, dx_f = _grads(fast, x, x_grad)
    np.testing.assert_allclose(out_f, out_r, rtol=1e-5, atol=1e-6)
    assert g_f.keys() == g_r.keys()
    for name in g_r:
        if g_r[name] is None:
            assert g_f[name] is None, name
        else:
            np.testing.assert_allclose(g_f[name], g_r[name], rtol=1e-5, atol=1e-5, err_msg=name)
    if dx_r is None:
        assert dx_f is None
    else:
        np.testing.assert_allclose(dx_f, dx_r, rtol=1e-5, atol=1e-5)


def test_fast_linear_only_in_dygraph_training_and_can_be_undone(monkeypatch):
    from paddle_models.engine import fast_linear

    calls = []
    real_apply = fast_linear._LinearGrad.apply
    monkeypatch.setattr(fast_linear._LinearGrad, "apply", lambda *a: calls.append(1) or real_apply(*a))
    paddle.seed(2)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 6), paddle.nn.ReLU(), paddle.nn.Linear(6, 2))
    assert use_fast_linear_grad(net) == 2
    x = paddle.randn([3, 4])
    net.train()
    y_train = net(x).numpy()
    assert len(calls) == 2
    with paddle.no_grad():
        net(x)
    net.eval()
    with paddle.no_grad():
        y_eval = net(x).numpy()
    net(x)
    assert len(calls) == 2  # no_grad and eval use the layer's own forward
    np.testing.assert_allclose(y_train, y_eval, rtol=1e-6)
    assert use_fast_linear_grad(net, enable=False) == 2
    assert all("forward" not in layer.__dict__ for layer in net.sublayers())
    with paddle.no_grad():
        np.testing.assert_allclose(net(x).numpy(), y_eval, rtol=1e-6)


def test_fast_linear_model_exports_to_static(tmp_path):
    paddle.seed(3)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 6), paddle.nn.Tanh(), paddle.nn.Linear(6, 2))
    use_fast_linear_grad(net)
    net.eval()
    x = paddle.randn([5, 4])
    with paddle.no_grad():
        want = net(x).numpy()
    path = str(tmp_path / "m")
    paddle.jit.save(net, path, input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
    loaded = paddle.jit.load(path)
    np.testing.assert_allclose(loaded(x).numpy(), want, rtol=1e-5)


def test_functional_fast_linear_gradient_against_numpy():
    rng = np.random.RandomState(4)
    x_np, w_np, b_np = (rng.randn(7, 3).astype("float32"), rng.randn(3, 5).astype("float32"),
                        rng.randn(5).astype("float32"))
    x, w, b = (paddle.to_tensor(a, stop_gradient=False) for a in (x_np, w_np, b_np))
    y = linear_with_fast_grad(x, w, b)
    dy = rng.randn(7, 5).astype("float32")
    (y * paddle.to_tensor(dy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), x_np @ w_np + b_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), dy @ w_np.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), x_np.T @ dy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.grad.numpy(), dy.sum(0), rtol=1e-5, atol=1e-6)


_PROBE = ("import os, json, paddle_models, paddle; "
          "print(json.dumps({'applied': paddle_models.tune_cpu(), 'mkl': os.environ.get('MKL_DEBUG_CPU_TYPE'), "
          "'stride': paddle.get_flags(['FLAGS_use_stride_kernel'])['FLAGS_use_stride_kernel']}))")


def _probe(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "FLAGS_use_stride_kernel",
                                                             "PADDLE_MODELS_CPU_TUNING")}
    p = subprocess.run([sys.executable, "-c", _PROBE], env={**base, **env, "GLOG_minloglevel": "2"}, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_tune_cpu_applied_at_import_and_opt_out():
    on = _probe()
    assert on["applied"]["mallopt"] is True and on["applied"]["disabled"] is False
    assert on["mkl"] == ("5" if cpu_info()["vendor"] == "AMD" else None)
    if not paddle.is_compiled_with_cuda():
        assert on["stride"] is False and on["applied"]["no_stride_kernels"] is True
    off = _probe(PADDLE_MODELS_CPU_TUNING="0")
    assert {k: v for k, v in off["applied"].items() if k != "cpu"} == {
        "mkl_avx2": False, "mallopt": False, "no_stride_kernels": False, "disabled": True, "MKL_DEBUG_CPU_TYPE": None}
    assert off["mkl"] is None and off["stride"] is True


def test_tune_cpu_keeps_the_users_own_settings():
    mine = _probe(MKL_DEBUG_CPU_TYPE="4", FLAGS_use_stride_kernel="1")
    assert mine["mkl"] == "4" and mine["applied"]["mkl_avx2"] is False
    assert mine["stride"] is True and mine["applied"]["no_stride_kernels"] is False


def test_tune_cpu_does_not_import_paddle_and_sets_the_flag_both_ways():
    """Importing paddle_models stays cheap (paddle is imported by whoever runs a model), and the stride flag is
    off either way: read from the environment by a later paddle import, or set directly when paddle came first."""
    code = ("import sys, paddle_models; print(int('paddle' in sys.modules)); import paddle; "
            "print(int(paddle.get_flags(['FLAGS_use_stride_kernel'])['FLAGS_use_stride_kernel']))")
    first = ("import sys, paddle, paddle_models; "
             "print(int(paddle.get_flags(['FLAGS_use_stride_kernel'])['FLAGS_use_stride_kernel']))")
    env = {k: v for k, v in os.environ.items() if k not in ("FLAGS_use_stride_kernel", "PADDLE_MODELS_CPU_TUNING")}
    env["GLOG_minloglevel"] = "2"
    out = [subprocess.run([sys.executable, "-c", c], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300).stdout.split() for c in (code, first)]
    if paddle.is_compiled_with_cuda():
        pytest.skip("stride kernels stay on in CUDA builds")
    assert out[0] == ["0", "0"] and out[1] == ["0"]


# ---- engine/fast_embedding.py: the same gradient as paddle's own backward, exactly ------------------------
def _emb_pair(rows, dim, padding_idx, min_numel):
    from paddle_models.engine.fast_embedding import use_fast_embedding_grad

    paddle.seed(3)
    ref = paddle.nn.Embedding(rows, dim, padding_idx=padding_idx)
    fast = paddle.nn.Embedding(rows, dim, padding_idx=padding_idx)
    fast.weight.set_value(ref.weight)
    printed = repr(fast)
    assert use_fast_embedding_grad(fast, min_numel=min_numel) == 1
    assert repr(fast) == printed and type(fast) is paddle.nn.Embedding
    return ref, fast


@pytest.mark.parametrize("padding_idx", [None, 1, -1])
def test_fast_embedding_grad_equals_paddles_through_steps_and_clears(padding_idx):
    """Repeated ids, the padding row, gradient accumulation over two backward passes, then the optimizer's
    clear_grad (set_to_zero, the Trainer's) and a plain clear (grad gone): the gradient equals paddle's own
    bit for bit at every step, and the weights after SGD steps too."""
    rows, dim = 50, 8
    ref, fast = _emb_pair(rows, dim, padding_idx, min_numel=1)
    opts = [paddle.optimizer.SGD(0.1, parameters=m.parameters()) for m in (ref, fast)]
    rng = np.random.RandomState(0)
    for step in range(7):
        ids = rng.randint(0, rows, (4, 6)).astype("int64")
        ids[0, :3] = 1
        ids[1, :2] = rows - 1
        ids[2, :] = 7  # one id many times
        dy = rng.randn(4, 6, dim).astype("float32")
        for m in (ref, fast):
            out = m(paddle.to_tensor(ids))
            (out * paddle.to_tensor(dy)).sum().backward()
        np.testing.assert_array_equal(fast.weight.grad.numpy(), ref.weight.grad.numpy())
        if step % 3 == 0:
            continue  # accumulate into the next step's backward
        for o in opts:
            o.step()
            if step == 4:
                o.clear_grad(set_to_zero=False)
            else:
                o.clear_grad()
        np.testing.assert_array_equal(fast.weight.numpy(), ref.weight.numpy())
    assert 1 <= len(fast._fast_grad_tables.items) <= 2


def test_fast_embedding_grad_only_where_it_applies():
    from paddle_models.engine.fast_embedding import use_fast_embedding_grad

    small = paddle.nn.Embedding(10, 4)
    sparse = paddle.nn.Embedding(10, 4, sparse=True)
    big = paddle.nn.Embedding(1 << 12, 1 << 10)  # 4M weights: the default threshold
    model = paddle.nn.LayerList([small, sparse, big])
    assert use_fast_embedding_grad(model) == 1 and "forward" in big.__dict__ and "forward" not in small.__dict__
    ids = paddle.to_tensor([[1, 2, 3]])
    big.eval()  # eval and no_grad take the layer's own forward: no tables made
    with paddle.no_grad():
        big(ids)
    assert big._fast_grad_tables.items == []
    assert use_fast_embedding_grad(model, enable=False) == 1 and "forward" not in big.__dict__
