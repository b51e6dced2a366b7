"""No model file runs code: pickled weights go through the restricted unpickler everywhere the project opens
them, real Paddle state dicts read identically to ``paddle.load``, new checkpoints hold no pickle, and
checkpoints written by earlier versions (model.pdparams, optimizer_<i>.pdopt, rng.pkl) still load."""
import builtins
import copy
import json
import os
import pickle
import random

import numpy as np
import paddle
import pytest

from paddle_models import UnsafeModelFile, load_config
from paddle_models.engine import checkpoint as ck
from paddle_models.engine.checkpoint import (
    CheckpointError,
    file_sha256,
    load_checkpoint,
    load_model_weights,
    resolve_weights,
    save_checkpoint,
)
from paddle_models.safe_pickle import safe_load


# ---- crafted files --------------------------------------------------------------------------------
class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


ATTACKS = {"os.system": (_RunsCommand, f"{os.system.__module__}.system"),
           "open": (_OpensFile, f"{builtins.open.__module__}.open")}


def write_evil(path, marker, attack="os.system", around=None):
    """A state dict whose pickle creates ``marker`` when opened by ``pickle.load`` / ``paddle.load``."""
    cls, _ = ATTACKS[attack]
    state = dict(around or {"linear.weight": np.zeros((2, 2), "float32")})
    state["evil"] = cls(str(marker))
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)
    return str(path)


def assert_refused(excinfo, path, attack="os.system"):
    msg = str(excinfo.value)
    assert os.path.basename(str(path)) in msg and ATTACKS[attack][1] in msg and "refuses to load" in msg, msg


def test_the_crafted_file_really_runs_code_with_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = write_evil(tmp_path / "evil.pdparams", marker)
    with open(path, "rb") as f:
        pickle.load(f)  # what an unrestricted load does
    assert marker.exists()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_load_model_weights_refuses_a_crafted_pdparams(tmp_path, attack):
    marker = tmp_path / "pwned"
    path = write_evil(tmp_path / "evil.pdparams", marker, attack)
    with pytest.raises(UnsafeModelFile) as e:
        load_model_weights(paddle.nn.Linear(2, 2), path)
    assert_refused(e, path, attack)
    with pytest.raises(UnsafeModelFile):
        safe_load(path)
    assert not marker.exists()


def _old_checkpoint_with(tmp_path, evil_file, marker):
    """An old-format checkpoint folder (manifest matching) whose ``evil_file`` is a crafted pickle."""
    model, opt, sched = _model_opt()
    _train(model, opt, sched, 1)
    folder = str(tmp_path / "last")
    old_save_checkpoint(folder, model, [opt], [sched], {"step": 1})
    fp = os.path.join(folder, evil_file)
    write_evil(fp, marker)
    _rewrite_manifest(folder)
    ck.verify_checkpoint(folder)
    return folder, fp


@pytest.mark.parametrize("evil_file", ["model.pdparams", "optimizer_0.pdopt", "rng.pkl"])
def test_load_checkpoint_refuses_a_crafted_file_with_a_matching_manifest(tmp_path, evil_file):
    marker = tmp_path / "pwned"
    folder, fp = _old_checkpoint_with(tmp_path, evil_file, marker)
    model, opt, sched = _model_opt()
    with pytest.raises(UnsafeModelFile) as e:
        load_checkpoint(folder, model, [opt], [sched])
    assert_refused(e, fp)
    assert not marker.exists()


def test_trainer_checkpoint_paths_refuse_a_crafted_model_file(tmp_path):
    """Global.checkpoint as a folder or as the file in it: both reach the restricted unpickler."""
    marker = tmp_path / "pwned"
    folder, fp = _old_checkpoint_with(tmp_path, "model.pdparams", marker)
    for path in (folder, fp):
        with pytest.raises(UnsafeModelFile) as e:
            load_model_weights(_model_opt()[0], path)
        assert_refused(e, fp)
    assert not marker.exists()


def small_net():
    from paddle_models.multimodal.network import SMALL_ARCH, network_from_config

    arch = copy.deepcopy(SMALL_ARCH)
    arch["name"] = "ernie_m_resnet"
    paddle.seed(0)
    return network_from_config(load_config(data={"Arch": arch})["Arch"])


@pytest.mark.parametrize("key", ["checkpoint", "ernie", "resnet"])
def test_multimodal_weights_loader_refuses_a_crafted_pdparams(tmp_path, key):
    from paddle_models.multimodal.weights import load_pretrained

    marker = tmp_path / "pwned"
    path = write_evil(tmp_path / f"{key}.pdparams", marker)
    with pytest.raises(UnsafeModelFile) as e:
        load_pretrained(small_net(), {"checkpoint": None, "ernie": None, "resnet": None, "strict": True, key: path})
    assert_refused(e, path)
    # a folder holding it under a name the loader looks for
    os.makedirs(tmp_path / "pretrained")
    os.replace(path, tmp_path / "pretrained" / "model_state.pdparams")
    with pytest.raises(UnsafeModelFile):
        load_pretrained(small_net(), {key: str(tmp_path / "pretrained")})
    assert not marker.exists()


def test_multimodal_weights_loader_reads_safetensors(tmp_path):
    from safetensors.numpy import save_file

    from paddle_models.multimodal.weights import load_pretrained

    src, dst = small_net(), small_net()
    paddle.seed(7)
    for p in src.classifier1.parameters():  # differ from dst's (same seed) initialisation
        p.set_value(paddle.rand(p.shape))
    path = str(tmp_path / "net.safetensors")
    save_file({k: v.numpy() for k, v in src.state_dict().items()}, path)
    load_pretrained(dst, {"checkpoint": path, "strict": True})
    for k, v in src.state_dict().items():
        assert np.array_equal(v.numpy(), dst.state_dict()[k].numpy()), k


def test_safetensors_saved_by_paddle_under_a_pdparams_name(tmp_path):
    model = paddle.nn.Linear(2, 3)
    path = str(tmp_path / "st.pdparams")
    paddle.save(model.state_dict(), path, safetensors=True)
    assert_same(safe_load(path), paddle.load(path, return_numpy=True, safetensors=True))
    other = paddle.nn.Linear(2, 3)
    load_model_weights(other, path)
    np.testing.assert_array_equal(other.weight.numpy(), model.weight.numpy())


def test_refused_codecs_and_object_arrays(tmp_path):
    p = tmp_path / "codec.pdparams"
    p.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")  # protocol 0: _codecs.encode("abc", "rot13")
    with pytest.raises(UnsafeModelFile, match=r"codec.pdparams: .*_codecs.encode with the codec 'rot13'"):
        safe_load(str(p))
    p = tmp_path / "objects.pdparams"
    p.write_bytes(pickle.dumps({"w": np.array([1, "a"], dtype=object)}))
    with pytest.raises(UnsafeModelFile, match="objects.pdparams: .*array of Python objects"):
        safe_load(str(p))


# ---- real Paddle files read like paddle.load ----------------------------------------------------------
def assert_same(a, b, where=""):
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _tiny_ernie():
    from paddlenlp.transformers import ErnieMConfig, ErnieMModel

    paddle.seed(1)
    return ErnieMModel(ErnieMConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64))


@pytest.mark.parametrize("protocol", [4, 2])
def test_ernie_m_state_dict_reads_like_paddle_load(tmp_path, protocol):
    model = _tiny_ernie()
    path = str(tmp_path / "model_state.pdparams")
    paddle.save(model.state_dict(), path, protocol=protocol)
    got = safe_load(path)
    assert_same(got, paddle.load(path, return_numpy=True))
    assert list(got) == list(model.state_dict())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)


def test_resnet18_state_dict_reads_like_paddle_load(tmp_path):
    paddle.seed(2)
    model = paddle.vision.models.resnet18()
    path = str(tmp_path / "resnet18.pdparams")
    paddle.save(model.state_dict(), path)
    assert_same(safe_load(path), paddle.load(path, return_numpy=True))
    other = paddle.vision.models.resnet18()
    load_model_weights(other, path)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_adamw_state_reads_like_paddle_load(tmp_path):
    model, opt, sched = _model_opt()
    _train(model, opt, sched, 2)
    path = str(tmp_path / "adamw.pdopt")
    paddle.save(opt.state_dict(), path)
    got = safe_load(path)
    assert "LR_Scheduler" in got and any(k.endswith("moment1_0") for k in got)
    assert_same(got, paddle.load(path, return_numpy=True))
    # a tensor nested below the top level: paddle.save writes it as tuple((name, ndarray))
    nested = {"master_weights": {"w": paddle.ones([2])}, "step": np.int64(3), "lr": 0.5}
    paddle.save(nested, str(tmp_path / "nested.pdopt"))
    assert_same(safe_load(str(tmp_path / "nested.pdopt")),
                paddle.load(str(tmp_path / "nested.pdopt"), return_numpy=True))


def test_arrays_split_by_paddle_save_are_joined(tmp_path):
    w = np.arange(20, dtype="float32").reshape(4, 5)
    saved = {"w@@.0": w.ravel()[:12], "w@@.1": w.ravel()[12:], "b": np.ones(3),
             "UnpackBigParamInfor@@": {"w": {"OriginShape": (4, 5), "slices": ["w@@.0", "w@@.1"]}},
             "StructuredToParameterName@@": {"w": "linear_0.w_0", "b": "linear_0.b_0"}}
    path = str(tmp_path / "split.pdparams")
    with open(path, "wb") as f:
        pickle.dump(saved, f, protocol=2)
    got = safe_load(path)
    assert_same(got, paddle.load(path, return_numpy=True))
    np.testing.assert_array_equal(got["w"], w)


# ---- the checkpoint format ------------------------------------------------------------------------------
def _model_opt():
    paddle.seed(5)
    model = paddle.nn.Sequential(paddle.nn.Linear(3, 4), paddle.nn.BatchNorm1D(4), paddle.nn.Linear(4, 2))
    sched = paddle.optimizer.lr.StepDecay(0.1, 2)
    return model, paddle.optimizer.AdamW(learning_rate=sched, parameters=model.parameters()), sched


def _train(model, opt, sched, steps, seed=11):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        model(paddle.to_tensor(rng.randn(5, 3).astype("float32"))).mean().backward()
        opt.step()
        opt.clear_grad()
        sched.step()


def _structured_opt_state(model, opt):
    return {k: (v.numpy() if isinstance(v, paddle.Tensor) else v)
            for k, v in ck._rename_state(opt.state_dict(), ck._param_names(model)).items()}


def test_new_checkpoint_holds_no_pickle_and_loads_without_one(tmp_path, monkeypatch):
    model, opt, sched = _model_opt()
    _train(model, opt, sched, 2)
    folder = save_checkpoint(str(tmp_path / "last"), model, [opt], [sched], {"step": 2})
    names = sorted(os.listdir(folder))
    assert names == ["manifest.json", "model.safetensors", "optimizer_0.json", "optimizer_0.safetensors",
                     "rng.json", "scheduler_0.json", "trainer.json"]
    for n in names:
        data = open(os.path.join(folder, n), "rb").read()
        assert data[:1] != b"\x80", f"{n} is a pickle"
        if n.endswith(".json"):
            json.loads(data)
        else:
            from safetensors.numpy import load_file

            assert n.endswith(".safetensors")
            load_file(os.path.join(folder, n))
    assert resolve_weights(folder) == os.path.join(folder, "model.safetensors")
    ref = (random.random(), np.random.rand(), paddle.rand([3]).numpy())
    _forbid_unrestricted_loads(monkeypatch)
    m2, o2, s2 = _model_opt()
    random.seed(0)
    np.random.seed(0)
    paddle.seed(0)
    assert load_checkpoint(folder, m2, [o2], [s2]) == {"step": 2}
    assert_same((random.random(), np.random.rand(), paddle.rand([3]).numpy()), ref)  # RNG restored exactly
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    assert_same(_structured_opt_state(m2, o2), _structured_opt_state(model, opt))
    _train(model, opt, sched, 1, seed=3)
    _train(m2, o2, s2, 1, seed=3)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k].numpy(), v.numpy(), err_msg=k)


# ---- checkpoints of earlier versions ----------------------------------------------------------------------
def old_save_checkpoint(path, model, optimizers=(), schedulers=(), trainer_state=None):
    """How earlier versions wrote a checkpoint (pickles: paddle.save and pickle.dump), without the atomic swap."""
    os.makedirs(path)
    paddle.save(model.state_dict(), os.path.join(path, "model.pdparams"))
    for i, opt in enumerate(optimizers):
        paddle.save(ck._rename_state(opt.state_dict(), ck._param_names(model)),
                    os.path.join(path, f"optimizer_{i}.pdopt"))
    for i, s in enumerate(schedulers):
        with open(os.path.join(path, f"scheduler_{i}.json"), "w") as f:
            json.dump({k: (float(v) if isinstance(v, (np.floating, float)) else v)
                       for k, v in s.state_dict().items()}, f)
    with open(os.path.join(path, "trainer.json"), "w") as f:
        json.dump(dict(trainer_state or {}), f, indent=1, default=float)
    with open(os.path.join(path, "rng.pkl"), "wb") as f:
        pickle.dump({"python": random.getstate(), "numpy": np.random.get_state(),
                     "paddle": [s for s in paddle.get_rng_state()]}, f)
    _rewrite_manifest(path)
    return path


def _rewrite_manifest(path):
    files = sorted(n for n in os.listdir(path) if n != "manifest.json")
    manifest = {n: {"bytes": os.path.getsize(os.path.join(path, n)), "sha256": file_sha256(os.path.join(path, n))}
                for n in files}
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def _forbid_unrestricted_loads(monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("an unrestricted pickle/paddle load was called")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(paddle, "load", no_pickle)


def test_old_format_checkpoint_loads_through_the_restricted_path(tmp_path, monkeypatch):
    model, opt, sched = _model_opt()
    _train(model, opt, sched, 2)
    folder = old_save_checkpoint(str(tmp_path / "old"), model, [opt], [sched], {"step": 2, "epoch": 1})
    ref = (random.random(), np.random.rand(), paddle.rand([3]).numpy())
    _forbid_unrestricted_loads(monkeypatch)
    assert resolve_weights(folder) == os.path.join(folder, "model.pdparams")
    m2, o2, s2 = _model_opt()
    random.seed(0)
    np.random.seed(0)
    paddle.seed(0)
    assert load_checkpoint(folder, m2, [o2], [s2]) == {"step": 2, "epoch": 1}
    assert_same((random.random(), np.random.rand(), paddle.rand([3]).numpy()), ref)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    assert_same(_structured_opt_state(m2, o2), _structured_opt_state(model, opt))
    assert s2.last_epoch == sched.last_epoch and o2.get_lr() == opt.get_lr()
    # the weights file given explicitly (Global.checkpoint=.../model.pdparams)
    m3 = _model_opt()[0]
    load_model_weights(m3, os.path.join(folder, "model.pdparams"))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m3.state_dict()[k].numpy(), v.numpy(), err_msg=k)
    _train(model, opt, sched, 1, seed=3)
    _train(m2, o2, s2, 1, seed=3)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(m2.state_dict()[k].numpy(), v.numpy(), err_msg=k)


def test_checkpoint_without_weights_is_a_clear_error(tmp_path):
    folder = save_checkpoint(str(tmp_path / "c"), paddle.nn.Linear(2, 2))
    os.remove(os.path.join(folder, "model.safetensors"))
    _rewrite_manifest(folder)
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        load_model_weights(paddle.nn.Linear(2, 2), folder)
