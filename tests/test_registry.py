"""Every registered model (the timm habit): builds small, runs forward and backward through its task."""
import copy

import numpy as np
import paddle
import pytest

from paddle_models import get_task, list_models, load_config
from paddle_models.registry import model_entry

MODELS = list_models()


def small(name, tmp_path):
    data = copy.deepcopy(model_entry(name)["small_config"])
    data.setdefault("Arch", {})["name"] = name
    data.setdefault("Global", {})["output_dir"] = str(tmp_path)
    return load_config(data=data)


def test_registry_is_populated():
    assert "ernie_m_resnet" in MODELS
    assert len(MODELS) == len(set(MODELS))


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name, tmp_path):
    paddle.seed(0)
    cfg = small(name, tmp_path)
    task = get_task(cfg["_family"])(cfg)
    model = task.build_model()
    variants = task.export_variants(model)
    model.train()
    for vname, (layer, _spec, example) in variants.items():
        inputs = {k: paddle.to_tensor(v) for k, v in example.items()}
        out = layer(**inputs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        floats = [o for o in outs if o.dtype in (paddle.float32, paddle.float64)]
        assert floats, f"{name}/{vname}: no float output"
        for o in floats:
            assert np.isfinite(o.numpy()).all(), f"{name}/{vname}: non-finite output"
        loss = sum(o.astype("float32").mean() for o in floats)
        loss.backward()
        grads = [p for p in layer.parameters() if not p.stop_gradient and p.grad is not None]
        assert grads, f"{name}/{vname}: backward reached no parameter"
        assert any(float(paddle.abs(p.grad).sum()) > 0 for p in grads)
        layer.clear_gradients()
