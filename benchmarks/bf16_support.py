#!/usr/bin/env python
"""What this Paddle build can do in bfloat16 on CPU, measured: the evidence behind ``Global.precision: bf16``
training in fp32 (README, speed section).

For the operators a training step of the faithful network needs (forward and backward), it lists which
kernels are registered for bfloat16 (plain CPU vs oneDNN), tries each one in dygraph on bfloat16 tensors,
and checks whether ``paddle.amp.auto_cast(dtype="bfloat16")`` changes the dtype of a Linear's output on CPU.

    python benchmarks/bf16_support.py [--json]
"""
import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

OPS = ["matmul", "matmul_grad", "conv2d", "conv2d_grad", "add", "add_grad", "gelu", "gelu_grad", "layer_norm",
       "layer_norm_grad", "softmax", "softmax_grad", "relu", "batch_norm", "embedding", "embedding_grad", "adamw"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import paddle
    import paddle.nn.functional as F

    import paddle_models  # noqa: F401
    from paddle_models.runtime import cpu_info, cpu_name

    paddle.set_device("cpu")
    cpu = cpu_info()
    kernels = paddle.base.core._get_registered_phi_kernels("function")
    reg = {}
    for op in OPS:
        keys = kernels.get(op, [])
        reg[op] = {"cpu_bf16": any("CPU" in k and "bfloat16" in k for k in keys),
                   "onednn_bf16": any("ONEDNN" in k and "bfloat16" in k for k in keys)}
    x = paddle.randn([8, 16]).astype("bfloat16")
    w = paddle.randn([16, 4]).astype("bfloat16")
    img = paddle.randn([1, 3, 8, 8]).astype("bfloat16")
    k = paddle.randn([4, 3, 3, 3]).astype("bfloat16")
    tries = {"matmul": lambda: paddle.matmul(x, w), "conv2d": lambda: F.conv2d(img, k),
             "gelu": lambda: F.gelu(x), "layer_norm": lambda: F.layer_norm(x, [16]), "add": lambda: x + x}
    dygraph = {}
    for onednn in (False, True):
        paddle.set_flags({"FLAGS_use_onednn": onednn, "FLAGS_use_mkldnn": onednn})
        for name, fn in tries.items():
            try:
                dygraph[f"{name} (FLAGS_use_onednn={onednn})"] = f"ok: {fn().dtype}"
            except Exception as e:  # the answer is the error text
                dygraph[f"{name} (FLAGS_use_onednn={onednn})"] = str(e).strip().splitlines()[0][:160]
    paddle.set_flags({"FLAGS_use_onednn": False, "FLAGS_use_mkldnn": False})
    lin = paddle.nn.Linear(16, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with paddle.amp.auto_cast(enable=True, dtype="bfloat16", level="O1"):
            out = lin(paddle.randn([8, 16]))
    amp = {"linear_output_dtype": str(out.dtype),
           "warning": next((str(c.message) for c in caught if "amp" in str(c.message).lower()), "")}
    res = {"paddle": paddle.__version__, "cpu": cpu_name(cpu), "cpu_bf16": cpu["bf16"],
           "registered": reg, "dygraph_bf16_calls": dygraph, "auto_cast": amp}
    print(f"paddle {res['paddle']} on {res['cpu']} (native bf16: {cpu['bf16']})")
    print(f"{'kernel':<18} {'CPU bf16':>9} {'oneDNN bf16':>12}")
    for op, r in reg.items():
        print(f"{op:<18} {str(r['cpu_bf16']):>9} {str(r['onednn_bf16']):>12}")
    for k_, v in dygraph.items():
        print(f"dygraph {k_}: {v}")
    print(f"auto_cast(bfloat16) on CPU: Linear output {amp['linear_output_dtype']}; warning: {amp['warning']}")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
