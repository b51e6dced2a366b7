"""Helpers of the benchmark scripts whose numbers go into notes: checked against hand-counted values."""
import importlib.util
import os

import paddle
import pytest
from conftest import ROOT


def _benchmark_module(name):
    """benchmarks/<name>.py imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def inference_bench():
    return _benchmark_module("inference")


class _Net(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 8, 3, stride=2, padding=1)            # 1x3x16x16 -> 1x8x8x8
        self.grouped = paddle.nn.Conv2D(8, 8, 3, padding=1, groups=4, bias_attr=False)  # 2 input channels per group
        self.fc = paddle.nn.Linear(16, 4)

    def forward(self, image, tokens):
        return self.grouped(self.conv(image)).sum() + self.fc(tokens).sum()


def test_conv_linear_flops_counts_two_per_multiply_add(inference_bench):
    net = _Net()
    image, tokens = paddle.randn([1, 3, 16, 16]), paddle.randn([2, 5, 16])
    conv = 2 * (8 * 8 * 8) * (3 * 3 * 3)
    grouped = 2 * (8 * 8 * 8) * (2 * 3 * 3)
    fc = 2 * (2 * 5) * 16 * 4
    assert inference_bench.conv_linear_flops(net, [image, tokens]) == conv + grouped + fc
    # the hooks are gone afterwards: a second count starts from zero and the layers run unhooked
    assert inference_bench.conv_linear_flops(net, [image, tokens]) == conv + grouped + fc
    assert all(not getattr(m, "_forward_post_hooks", {}) for m in net.sublayers())


def test_multimodal_step_json_contract(tmp_path):
    """benchmarks/multimodal_step.py --json ends with {"rows", "twin", "twin_bf16", "cpu"}; rows carry key,
    eval_forward_s and train_step_s, the project defaults row has key 'defaults' and evaluates the way
    Global.eval_engine: auto does, and the bf16 row (CPUs with native bfloat16) runs a bf16 predictor. The small
    network keeps it quick; no twin here (torch is not a test dependency)."""
    import json
    import subprocess
    import sys

    from paddle_models.runtime import cpu_info, cpu_plan

    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "multimodal_step.py"), "--config",
           os.path.join(ROOT, "configs", "multimodal", "jsonl_small.yaml"), "--warmup", "0", "--steps", "1",
           "--only", "defaults,bf16", "--torch-python", "", "--json"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.startswith("CPU: ")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(out) == {"rows", "twin", "twin_bf16", "cpu"} and out["twin"] is None and out["twin_bf16"] is None
    assert out["cpu"]["vendor"] == cpu_info()["vendor"] and out["cpu"]["plan"] == cpu_plan(cpu_info())
    rows = {r["key"]: r for r in out["rows"]}
    want = {"defaults", "bf16"} if cpu_info()["bf16"] else {"defaults"}
    assert set(rows) == want, out["rows"]
    for r in rows.values():
        assert "error" not in r, r
        assert r["eval_forward_s"] > 0 and r["train_step_s"] > 0 and r["dygraph_eval_forward_s"] > 0
    assert rows["defaults"]["eval_engine"] == "inference (fp32)"
    if "bf16" in rows:
        assert rows["bf16"]["eval_engine"] == "inference (bf16)"


@pytest.fixture(scope="module")
def rec_bench():
    return _benchmark_module("rec_train")


def _zoo_model(folder, cls_name, marker):
    """A stand-in FuxiCTR zoo model: ``src`` is a package whose ``__init__`` re-exports by a relative import."""
    os.makedirs(folder)
    with open(os.path.join(folder, "__init__.py"), "w") as f:
        f.write(f"from .{cls_name} import *\n")
    with open(os.path.join(folder, f"{cls_name}.py"), "w") as f:
        f.write(f"class {cls_name}:\n    marker = {marker!r}\n")


def test_rec_bench_finds_zoo_models_in_both_folder_layouts(rec_bench, tmp_path):
    zoo = tmp_path / "FuxiCTR" / "model_zoo"
    _zoo_model(str(zoo / "DCNv2" / "src"), "DCNv2", "flat")                      # <Model>/src
    _zoo_model(str(zoo / "DeepFM" / "DeepFM_torch" / "src"), "DeepFM", "torch")  # <Model>/<Model>_torch/src
    (zoo / "DeepFM" / "DeepFM_tf").mkdir()
    assert rec_bench.zoo_folder(str(tmp_path / "FuxiCTR")) == str(zoo)  # the checkout root ...
    assert rec_bench.zoo_folder(str(zoo)) == str(zoo)                    # ... or its model_zoo
    with pytest.raises(FileNotFoundError):
        rec_bench.zoo_folder(str(tmp_path))
    # both are packages named "src": each is loaded under its own name, so neither shadows the other
    assert rec_bench.load_zoo_class(str(zoo), "DCNv2").marker == "flat"
    assert rec_bench.load_zoo_class(str(zoo), "DeepFM").marker == "torch"
    assert rec_bench.load_zoo_class(str(zoo), "ONN") is None  # not in this zoo: the table gets a note


def test_rec_bench_gives_fuxictr_our_configs_architecture(rec_bench):
    from paddle_models.config import load_config

    for name in rec_bench.MODELS:
        arch = load_config(os.path.join(ROOT, "configs", "rec", f"{name}_frappe.yaml"))["Arch"]
        kw = rec_bench.fuxi_kwargs(name, arch)
        if name == "lr":
            assert kw == {"regularizer": None}
            continue
        assert kw["embedding_dim"] == int(arch["embedding_dim"])
        if name in ("fm", "ffm"):
            continue
        hidden = [int(h) for h in arch["hidden_units"]]
        key = {"xdeepfm": "dnn_hidden_units", "dcn": "dnn_hidden_units",
               "dcnv2": "parallel_dnn_hidden_units"}.get(name, "hidden_units")
        assert kw[key] == hidden, name
        assert kw["net_dropout"] == float(arch["net_dropout"]) and kw["batch_norm"] == bool(arch["batch_norm"])
        assert kw["embedding_regularizer"] == float(arch["embedding_regularizer"])  # L2 in both: (lambda/2)|E|^2
        assert kw["net_regularizer"] is None
    xd = load_config(os.path.join(ROOT, "configs", "rec", "xdeepfm_frappe.yaml"))["Arch"]
    assert rec_bench.fuxi_kwargs("xdeepfm", xd)["cin_hidden_units"] == [int(u) for u in xd["cin_layer_units"]]


def test_rec_bench_sides_see_the_same_batches_and_the_cpu_is_named(rec_bench):
    a, b = rec_bench.IndexStream(100, 32), rec_bench.IndexStream(100, 32)
    seen = [a.next() for _ in range(7)]  # crosses two epochs
    for s in seen:
        assert len(s) == 32 and len(set(s.tolist())) == 32
        assert (s == b.next()).all()
    assert rec_bench.cpu_name().strip()
