"""The one optimizer builder (paddle_models/engine/optim.py): every parameter group gets its own weight decay,
checked against updates written out in numpy; the default groups; gradient clipping; FTRL by name; schedules."""
import numpy as np
import paddle
import pytest

from paddle_models.config import load_config
from paddle_models.engine.ftrl import FTRL
from paddle_models.engine.optim import (
    ParamGroup,
    assign_groups,
    build_optimizer,
    build_scheduler,
    default_groups,
    schedulers_of,
)

START = {"a": np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]), "b": np.array([1.0, -2.0, 0.5]),
         "c": np.array([[-0.5, 3.0], [0.75, -1.25]])}
#: forced gradients of three steps, per parameter
GRADS = [{k: np.random.RandomState(10 * step + i).randn(*v.shape) for i, (k, v) in enumerate(START.items())}
         for step in range(3)]


def optimizer_cfg(**over):
    """A validated ``Optimizer`` section (the common schema's defaults, then ``over``)."""
    return load_config(data={"Arch": {"name": "fm"}, "Optimizer": over})["Optimizer"]


def make_params():
    return {k: paddle.create_parameter(list(v.shape), "float32",
                                       default_initializer=paddle.nn.initializer.Assign(v.astype("float32")))
            for k, v in START.items()}


def run(opt, params, steps=3):
    """Steps of ``opt`` whose loss gradient is forced to GRADS; the parameters afterwards (float64)."""
    for grads in GRADS[:steps]:
        loss = sum((params[k] * paddle.to_tensor(g.astype("float32"))).sum() for k, g in grads.items())
        loss.backward()
        opt.step()
        opt.clear_grad()
    return {k: p.numpy().astype(np.float64) for k, p in params.items()}


def groups_of(params, decays):
    return [ParamGroup(k, (params[k],), d) for k, d in decays.items()]


def sgd_numpy(lr, decays, steps=3):
    """SGD with an L2 term per parameter: p <- p - lr * (g + wd * p)."""
    p = {k: v.copy() for k, v in START.items()}
    for grads in GRADS[:steps]:
        for k in p:
            p[k] = p[k] - lr * (grads[k] + decays[k] * p[k])
    return p


def adam_numpy(lr, decays, decoupled, steps=3, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam (Kingma & Ba, Algorithm 1 with the bias corrections folded into the step size) with an L2 term
    added to the gradient, or (``decoupled``) AdamW's p <- p - lr * wd * p before the Adam step."""
    p = {k: v.copy() for k, v in START.items()}
    m = {k: np.zeros_like(v) for k, v in START.items()}
    v2 = {k: np.zeros_like(v) for k, v in START.items()}
    for t, grads in enumerate(GRADS[:steps], start=1):
        for k in p:
            g = grads[k] if decoupled else grads[k] + decays[k] * p[k]
            if decoupled:
                p[k] = p[k] - lr * decays[k] * p[k]
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v2[k] = beta2 * v2[k] + (1 - beta2) * g * g
            step = lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
            p[k] = p[k] - step * m[k] / (np.sqrt(v2[k]) + eps * np.sqrt(1 - beta2 ** t))
    return p


def assert_params(got, want):
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("decays", [{"a": 0.1, "b": 0.0, "c": 0.3},   # three coefficients: Paddle's groups
                                    {"a": 0.2, "b": 0.2, "c": 0.2}])  # one coefficient: one parameter list
def test_sgd_gives_each_group_its_own_l2(decays):
    params = make_params()
    opt = build_optimizer(optimizer_cfg(name="SGD", lr=0.5), groups_of(params, decays), 0.5)
    assert_params(run(opt, params), sgd_numpy(0.5, decays))


@pytest.mark.parametrize("name,decoupled", [("Adam", False), ("AdamW", True)])
@pytest.mark.parametrize("decays", [{"a": 0.1, "b": 0.0, "c": 0.3},   # Paddle's groups
                                    {"a": 0.5, "b": 0.0, "c": 0.0},   # AdamW: one list + apply_decay_param_fun
                                    {"a": 0.0, "b": 0.0, "c": 0.0}])
def test_adam_and_adamw_give_each_group_its_own_decay(name, decoupled, decays):
    params = make_params()
    opt = build_optimizer(optimizer_cfg(name=name, lr=0.01), groups_of(params, decays), 0.01)
    assert_params(run(opt, params), adam_numpy(0.01, decays, decoupled))


def test_the_decay_really_differs_between_groups():
    """The reference above is not blind to the decay: the same run without it ends elsewhere."""
    decays = {"a": 0.1, "b": 0.0, "c": 0.3}
    with_decay, without = adam_numpy(0.01, decays, False), adam_numpy(0.01, dict.fromkeys(decays, 0.0), False)
    assert np.abs(with_decay["a"] - without["a"]).max() > 1e-3 and np.abs(with_decay["c"] - without["c"]).max() > 1e-3
    np.testing.assert_array_equal(with_decay["b"], without["b"])


def test_default_groups_exempt_biases_and_norm_weights():
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.LayerNorm(4), paddle.nn.Linear(4, 2))
    groups = default_groups(model.parameters(), optimizer_cfg(weight_decay=0.01))
    by_name = {g.name: g for g in groups}
    assert set(by_name) == {"decay", "no_decay_bias_norm"}
    assert [tuple(p.shape) for p in by_name["decay"].params] == [(3, 4), (4, 2)]
    assert by_name["decay"].weight_decay == 0.01 and by_name["no_decay_bias_norm"].weight_decay == 0.0
    assert len(by_name["no_decay_bias_norm"].params) == 4  # two biases, the norm's weight and bias
    # nothing to exempt from (no decay) or no exemption: one group, in model order
    for cfg in (optimizer_cfg(weight_decay=0.0), optimizer_cfg(weight_decay=0.01, no_decay_bias_norm=False)):
        (group,) = default_groups(model.parameters(), cfg)
        assert [p.name for p in group.params] == [p.name for p in model.parameters()]
        assert group.weight_decay == float(cfg["weight_decay"])


def test_assign_groups_first_rule_wins_and_frozen_parameters_are_left_out():
    params = make_params()
    params["c"].stop_gradient = True
    first = {id(params["a"]), id(params["b"])}
    rules = [("first", 0.1, lambda p: id(p) in first), ("second", 0.2, lambda p: True)]
    groups = assign_groups(params.values(), rules, ("rest", 0.3))
    assert [(g.name, g.params, g.weight_decay) for g in groups] == \
        [("first", (params["a"], params["b"]), 0.1)]  # "second" and "rest" are empty: left out


def _clipped(grads, clip_norm, keys):
    norm = np.sqrt(sum((grads[k] ** 2).sum() for k in keys))
    return {k: grads[k] * (clip_norm / max(norm, clip_norm)) for k in keys}


@pytest.mark.parametrize("decays,per_group", [({"a": 0.0, "b": 0.0, "c": 0.0}, False),
                                              ({"a": 0.1, "b": 0.0, "c": 0.3}, True)])
def test_grad_clip_measures_the_norm_as_documented(decays, per_group):
    """One coefficient: one global norm over all parameters; Paddle's groups: Paddle clips group by group."""
    params = make_params()
    opt = build_optimizer(optimizer_cfg(name="SGD", lr=0.5, grad_clip=0.5), groups_of(params, decays), 0.5)
    got = run(opt, params, steps=1)
    grads = {}
    for keys in ([[k] for k in START] if per_group else [list(START)]):
        grads.update(_clipped(GRADS[0], 0.5, keys))
    for k in START:
        want = START[k] - 0.5 * (grads[k] + decays[k] * START[k])
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=k)


def test_ftrl_by_name_and_unknown_names():
    params = make_params()
    wide_cfg = load_config(data={"Arch": {"name": "widedeep"}, "Optimizer": {"wide": {"l1": 0.25, "beta": 0.5}}}
                           )["Optimizer"]["wide"]
    opt = build_optimizer(wide_cfg, [ParamGroup("wide", tuple(params.values()), 0.0)], 0.1, name="FTRL")
    assert isinstance(opt, FTRL) and opt._hyper["l1"] == 0.25 and opt._hyper["beta"] == 0.5
    with pytest.raises(ValueError, match=r"Optimizer.name: unknown optimizer 'Lamb' \(AdamW, Adam, Adagrad, SGD\)"):
        build_optimizer(optimizer_cfg(name="Lamb"), groups_of(params, {"a": 0.0}), 0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'FTRL'"):  # FTRL's settings are not the section's
        build_optimizer(optimizer_cfg(name="FTRL"), groups_of(params, {"a": 0.0}), 0.1)


@pytest.mark.parametrize("over,want", [
    ({"schedule": "constant"}, None),
    ({"schedule": "constant", "warmup_steps": 4}, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    ({"schedule": "linear", "warmup_steps": 2}, [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8]),    # 10 steps
    ({"schedule": "linear", "warmup_ratio": 0.2}, [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8]),  # 0.2 * 10 = 2 steps
    ({"schedule": "cosine"}, [1.0, 0.975528, 0.904508, 0.793893, 0.654508, 0.5]),
    ({"schedule": "noam", "warmup_steps": 4}, [0.25, 0.5, 0.75, 1.0, 0.894427, 0.816497]),
])
def test_schedules(over, want):
    rate = build_scheduler(optimizer_cfg(lr=2.0, **over), 10)
    if want is None:
        assert rate == 2.0 and schedulers_of(rate) == []
        return
    assert schedulers_of(rate) == [rate]
    got = []
    for _ in want:
        got.append(rate())
        rate.step()
    np.testing.assert_allclose(got, [2.0 * w for w in want], rtol=1e-5)
    with pytest.raises(ValueError, match="Optimizer.schedule: unknown schedule 'step'"):
        build_scheduler(optimizer_cfg(schedule="step"), 10)


# ---- Optimizer.no_decay ------------------------------------------------------------------------------
STRUCTURED = {"a": "encoder.linear.weight", "b": "encoder.linear.bias", "c": "encoder.norm_proj.weight"}


def test_no_decay_patterns_exempt_parameters_by_their_structured_name():
    """AdamW with ``Optimizer.no_decay: [bias, norm]``: ``b`` (a bias) and ``c`` (a 2-D matrix whose structured name
    holds "norm", which the 1-D rule of no_decay_bias_norm would decay) step as Adam without decay, ``a`` with it."""
    params = make_params()
    names = {params[k].name: STRUCTURED[k] for k in params}
    cfg = optimizer_cfg(name="AdamW", lr=0.01, weight_decay=0.5, no_decay=["bias", "norm"], no_decay_bias_norm=False)
    groups = default_groups(params.values(), cfg, names)
    assert [(g.name, g.params, g.weight_decay) for g in groups] == \
        [("no_decay", (params["b"], params["c"]), 0.0), ("decay", (params["a"],), 0.5)]
    assert_params(run(build_optimizer(cfg, groups, 0.01), params), adam_numpy(0.01, {"a": 0.5, "b": 0.0, "c": 0.0},
                                                                               decoupled=True))
    # without the patterns, the 1-D rule alone leaves c decayed
    only_1d = default_groups(params.values(), optimizer_cfg(weight_decay=0.5), names)
    assert {g.name: g.params for g in only_1d}["decay"] == (params["a"], params["c"])


def test_no_decay_needs_names_and_plain_patterns():
    params = make_params()
    with pytest.raises(ValueError, match=r"Optimizer.no_decay: the parameters' structured names are needed"):
        default_groups(params.values(), optimizer_cfg(weight_decay=0.1, no_decay=["bias"]))
    with pytest.raises(ValueError, match=r"Optimizer.no_decay: expected a list of non-empty parameter-name patterns"):
        default_groups(params.values(), optimizer_cfg(weight_decay=0.1, no_decay=["bias", ""]), {})


def test_the_faithful_recipe_decays_what_the_baseline_decays():
    """configs/multimodal/ernie_m_resnet101.yaml's Optimizer section through the default Task.build_optimizers on
    the small NetWork (the same module names as the faithful one): AdamW decays exactly the trainable parameters
    the baseline notebook's ``decay_params`` holds (names in model.named_parameters() without "bias" / "norm"),
    the ResNet's BatchNorm scales among them, at 1.2e-4."""
    import copy

    from paddle_models import get_task
    from paddle_models.multimodal.network import SMALL_ARCH, network_from_config

    faithful = load_config("configs/multimodal/ernie_m_resnet101.yaml")["Optimizer"]
    arch = copy.deepcopy(SMALL_ARCH)
    arch["name"] = "ernie_m_resnet"
    cfg = load_config(data={"Arch": arch, "Optimizer": dict(faithful)})
    net = network_from_config(cfg["Arch"])
    (opt,), _ = get_task("multimodal")(cfg).build_optimizers(net, total_steps=10)
    baseline = {p.name for n, p in net.named_parameters()
                if not any(nd in n for nd in ["bias", "norm"]) and not p.stop_gradient}
    decayed = {p.name for p in opt._parameter_list if opt._apply_decay_param_fun(p.name)}
    assert decayed == baseline and opt._weight_decay == pytest.approx(1.2e-4)
    assert {n for n, p in net.named_parameters() if p.name in decayed} >= {"resnet.resnet.1.weight",
                                                                           "classifier1.weight"}
