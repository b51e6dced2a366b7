"""Every registered rec model: forward shapes, backward reaches every weight, overfits a small batch,
and exports to a static graph that computes the same function (parametrized over the registry)."""
import numpy as np
import paddle
import pytest

from paddle_models import list_models
from paddle_models.config import _merge, load_config
from paddle_models.engine.loader import to_tensors
from paddle_models.metrics import auc
from paddle_models.registry import get_task, model_entry

REC_MODELS = list_models("rec")


def small_task(name, **over):
    data = _merge(model_entry(name)["small_config"], {"Arch": {"name": name}})
    data = _merge(data, over) if over else data
    cfg = load_config(data=data)
    return get_task("rec")(cfg)


def test_registry_has_the_zoo():
    for name in ["lr", "fm", "ffm", "deepfm", "deepffm", "widedeep", "xdeepfm", "dcn", "dcnv2", "dssm"]:
        assert name in REC_MODELS


@pytest.mark.parametrize("name", REC_MODELS)
def test_forward_backward(name, tmp_path):
    paddle.seed(0)
    task = small_task(name)
    task.prepare(str(tmp_path))
    model = task.build_model()
    ds = task.dataset("train")
    batch = to_tensors(ds.batch(list(range(32))))
    loss, _ = task.forward_loss(model, batch)
    assert loss.shape == [] and np.isfinite(float(loss))
    loss.backward()
    for n, p in model.named_parameters():
        if p.stop_gradient:
            continue
        assert p.grad is not None, f"{name}: no gradient reached {n}"
        assert np.isfinite(p.grad.numpy()).all()
    model.eval()
    if task.kind == "ctr":
        ins = [batch["ids"]] + ([batch["values"]] if "values" in batch else [])
        prob = model(*ins)
        assert prob.shape == [32]
        p = prob.numpy()
        assert ((p > 0) & (p < 1)).all()
        # probability = sigmoid(logit)
        np.testing.assert_allclose(p, 1 / (1 + np.exp(-model.logit(*ins).numpy())), rtol=1e-5)
    else:
        s = model(batch["user_ids"], batch["item_ids"])
        assert s.shape == [32]
        m = model(batch["user_ids"], batch["item_ids"], all_pairs=True)
        assert m.shape == [32, 32]
        np.testing.assert_allclose(np.diag(m.numpy()), s.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", REC_MODELS)
def test_overfits_a_small_batch(name, tmp_path):
    paddle.seed(1)
    np.random.seed(1)
    task = small_task(name, Optimizer={"name": "Adam", "lr": 0.01, "wide": {"lr": 0.5}})
    task.prepare(str(tmp_path))
    model = task.build_model()
    opts, _ = task.build_optimizers(model, 200)
    ds = task.dataset("train")
    batch = to_tensors(ds.batch(list(range(64))))
    model.train()
    first = None
    for _ in range(150):
        loss, _ = task.forward_loss(model, batch)
        loss.backward()
        for o in opts:
            o.step()
            o.clear_grad()
        first = float(loss) if first is None else first
    last = float(loss)
    model.eval()
    if task.kind == "ctr":
        ins = [batch["ids"]] + ([batch["values"]] if "values" in batch else [])
        a = auc(batch["label"].numpy(), model(*ins).numpy())
        assert a > 0.97, f"{name}: train AUC {a:.3f} after 150 steps on 64 rows (loss {first:.3f} -> {last:.3f})"
        assert last < 0.5 * first
    else:  # in-batch softmax over 64 candidates: log(64) = 4.16 at the start
        assert last < 0.5 * first, f"{name}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", REC_MODELS)
def test_export_parity(name, tmp_path):
    paddle.seed(2)
    task = small_task(name)
    task.prepare(str(tmp_path))
    model = task.build_model()
    model.eval()
    spec = task.export_input_spec(model)
    batch = task.example_batch(model, 4)
    assert [s.name for s in spec] == list(batch)
    want = model(*[paddle.to_tensor(batch[s.name]) for s in spec]).numpy()
    path = str(tmp_path / "exported" / "model")
    paddle.jit.save(model, path, input_spec=spec)
    loaded = paddle.jit.load(path)
    got = loaded(*[paddle.to_tensor(batch[s.name]) for s in spec]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if task.kind == "retrieval":  # the towers export on their own for serving
        towers = task.export_towers(model)
        for tname, (layer, tspec) in towers.items():
            x = batch["user_ids" if tname == "user_tower" else "item_ids"]
            want_t = layer(paddle.to_tensor(x)).numpy()
            p = str(tmp_path / tname / "model")
            paddle.jit.save(layer, p, input_spec=tspec)
            np.testing.assert_allclose(paddle.jit.load(p)(paddle.to_tensor(x)).numpy(), want_t, rtol=1e-5, atol=1e-6)


def test_fm_interaction_matches_pairwise_sum():
    from paddle_models.rec.layers import fm_interaction

    rng = np.random.RandomState(0)
    e = rng.randn(3, 5, 4).astype("float32")
    want = np.array([sum(e[b, i] @ e[b, j] for i in range(5) for j in range(i + 1, 5)) for b in range(3)])
    np.testing.assert_allclose(fm_interaction(paddle.to_tensor(e)).numpy(), want, rtol=1e-5)


def test_ffm_pairs_match_definition(tmp_path):
    """FFM's interaction: sum over field pairs of <v_{i,f_j}, v_{j,f_i}> (brute force over the table)."""
    task = small_task("ffm", Data={"synthetic": {"numeric": 0, "sequence_len": 0}})
    task.prepare(str(tmp_path))
    model = task.build_model()
    w = np.random.RandomState(0).randn(*model.embedding.weight.shape).astype("float32")
    model.embedding.weight.set_value(w)
    ids = task.dataset("train").batch(list(range(6)))["ids"]
    F_, D = model.layout.num_fields, model.embedding.dim
    want = []
    for row in ids:
        v = w[row].reshape(F_, F_, D)  # [feature i, field j, D]
        want.append(sum(v[i, j] @ v[j, i] for i in range(F_) for j in range(i + 1, F_)))
    lin = model.linear(paddle.to_tensor(ids)).numpy()
    got = model.logit(paddle.to_tensor(ids)).numpy() - lin
    np.testing.assert_allclose(got, np.array(want), rtol=1e-4, atol=1e-4)


def test_cin_matches_loop():
    """One CIN layer equals its definition X^1_h = sum_ij W_hij (X^0_i * X^0_j), sum-pooled."""
    from paddle_models.rec.xdeepfm import CIN

    paddle.seed(0)
    cin = CIN(3, [2])
    x = np.random.RandomState(1).randn(2, 3, 4).astype("float32")
    W = cin.convs[0].weight.numpy()  # [H*m, out]
    b = cin.convs[0].bias.numpy()
    want = np.zeros((2, 2))
    for bi in range(2):
        for h in range(2):
            acc = np.zeros(4)
            for i in range(3):
                for j in range(3):
                    acc += W[i * 3 + j, h] * x[bi, i] * x[bi, j]
            want[bi, h] = (acc + b[h]).sum()
    np.testing.assert_allclose(cin(paddle.to_tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("structure", ["crossnet_only", "stacked", "parallel", "stacked_parallel"])
@pytest.mark.parametrize("mixture", [False, True])
def test_dcnv2_structures(structure, mixture, tmp_path):
    task = small_task("dcnv2", Arch={"model_structure": structure, "use_low_rank_mixture": mixture})
    task.prepare(str(tmp_path))
    model = task.build_model()
    batch = to_tensors(task.dataset("train").batch(list(range(8))))
    loss, _ = task.forward_loss(model, batch)
    loss.backward()
    assert np.isfinite(float(loss))
    assert model.cross.__class__.__name__ == ("CrossNetMix" if mixture else "CrossNetV2")


def test_dcnv2_full_rank_cross_layer():
    from paddle_models.rec.dcnv2 import CrossNetV2

    paddle.seed(0)
    net = CrossNetV2(5, 1)
    x = np.random.RandomState(0).randn(3, 5).astype("float32")
    W, b = net.layers[0].weight.numpy(), net.layers[0].bias.numpy()
    np.testing.assert_allclose(net(paddle.to_tensor(x)).numpy(), x * (x @ W + b) + x, rtol=1e-5)


def test_dcn_cross_layer():
    from paddle_models.rec.dcn import CrossNet

    paddle.seed(0)
    net = CrossNet(4, 2)
    x0 = np.random.RandomState(0).randn(3, 4).astype("float32")
    x = x0
    for w, b in zip(net.w, net.b, strict=True):
        x = x0 * (x @ w.numpy()) + b.numpy() + x
    np.testing.assert_allclose(net(paddle.to_tensor(x0)).numpy(), x, rtol=1e-5)


def test_dropout_layer():
    from paddle_models.rec.layers import Dropout

    d = Dropout(0.3)
    x = paddle.ones([400, 500])
    d.train()
    np.random.seed(0)
    y = d(x).numpy()
    zero = (y == 0).mean()
    assert abs(zero - 0.3) < 0.01                      # the rate
    np.testing.assert_allclose(y[y > 0], 1 / 0.7, rtol=1e-3)  # inverted scaling keeps the mean
    np.random.seed(0)
    assert np.array_equal(d(x).numpy(), y)             # numpy's seeded RNG: runs repeat
    d.eval()
    assert np.array_equal(d(x).numpy(), x.numpy())
    xg = paddle.ones([4, 5])
    xg.stop_gradient = False
    d.train()
    out = d(xg)
    out.sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), out.numpy())  # d(x*mask)/dx = mask


def test_export_with_dropout_and_batch_norm(tmp_path):
    task = small_task("deepfm", Arch={"net_dropout": 0.4, "batch_norm": True})
    task.prepare(str(tmp_path))
    model = task.build_model()
    batch = to_tensors(task.dataset("train").batch(list(range(64))))
    model.train()
    loss, _ = task.forward_loss(model, batch)  # updates the batch-norm statistics
    model.eval()
    spec = task.export_input_spec(model)
    ex = task.example_batch(model, 5)
    want = model(*[paddle.to_tensor(ex[s.name]) for s in spec]).numpy()
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=spec)
    got = paddle.jit.load(str(tmp_path / "m"))(*[paddle.to_tensor(ex[s.name]) for s in spec]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
