"""Helpers of the benchmark scripts whose numbers go into notes: checked against hand-counted values."""
import importlib.util
import os

import paddle
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def inference_bench():
    spec = importlib.util.spec_from_file_location("bench_inference", os.path.join(ROOT, "benchmarks", "inference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
