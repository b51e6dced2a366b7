#!/usr/bin/env python
"""Eval-forward and train-step throughput of the faithful multimodal network on CPU.

Batch: B=2 posts, 2 captions and 2 evidence images each, 224x224 images, text length 128, random weights
(the same setting as the issue's PyTorch-twin numbers). Each setting runs in its own process, because
the thread count must be fixed before paddle is imported. Ratios are measured in this one run:

    python benchmarks/multimodal_step.py [--steps 2] [--config configs/multimodal/ernie_m_resnet101.yaml]

Settings: paddle's default (1 thread), all cores, all cores + oneDNN in dygraph, and all cores + oneDNN +
frozen word embeddings (`Arch.freeze_word_embeddings`: the 192M-parameter table is not updated by AdamW;
this changes training, so it is an option, off by default).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(args):
    sys.path.insert(0, ROOT)
    import numpy as np
    import paddle

    if args.onednn:
        paddle.set_flags({"FLAGS_use_mkldnn": True})
    from paddle_models import get_task, load_config
    from paddle_models.multimodal.network import network_from_config

    cfg = load_config(args.config, [f"Global.output_dir={ROOT}/output/bench_mm",
                                    f"Arch.freeze_word_embeddings={str(args.freeze_emb).lower()}"])
    paddle.seed(0)
    model = network_from_config(cfg["Arch"])
    task = get_task("multimodal")(cfg)
    rng = np.random.RandomState(0)
    B, L, NC, NI, S = 2, 128, 2, 2, 224
    vocab = cfg["Arch"]["ernie"]["vocab_size"]
    batch = {
        "input_ids": rng.randint(5, vocab, (B, L)).astype("int64"), "attention_mask": np.ones((B, L), "int64"),
        "caption_ids": rng.randint(5, vocab, (B, NC, L)).astype("int64"), "caption_mask": np.ones((B, NC, L), "int64"),
        "image": rng.randn(B, 3, S, S).astype("float32"), "evidence_images": rng.randn(B, NI, 3, S, S).astype("float32"),
        "evidence_mask": np.ones((B, NI), "float32"), "label": np.array([0, 1], "int64"),
    }
    t = {k: paddle.to_tensor(v) for k, v in batch.items()}
    model.eval()
    with paddle.no_grad():
        model(**task.inputs(t))  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(**task.inputs(t))
        eval_s = (time.perf_counter() - t0) / args.steps
    model.train()
    opt, _ = task.build_optimizers(model, 100)
    opt = opt[0]

    def step():
        loss, _ = task.forward_loss(model, t)
        loss.backward()
        opt.step()
        opt.clear_grad()

    step()  # warm-up (creates the AdamW moments)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    train_s = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"eval_forward_s": eval_s, "train_step_s": train_s,
                      "eval_samples_per_s": B / eval_s, "train_samples_per_s": B / train_s}))


def run_setting(name, threads, onednn, freeze, args):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOG_minloglevel="2")
    cmd = [sys.executable, __file__, "--child", "--steps", str(args.steps), "--config", args.config]
    cmd += ["--onednn"] if onednn else []
    cmd += ["--freeze-emb"] if freeze else []
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return {"setting": name, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
    return {"setting": name, **json.loads(p.stdout.strip().splitlines()[-1])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--onednn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--freeze-emb", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)
    cores = os.cpu_count() or 1
    settings = [("paddle default (1 thread)", 1, False, False), (f"{cores} threads", cores, False, False),
                (f"{cores} threads + oneDNN", cores, True, False),
                (f"{cores} threads + oneDNN + frozen word emb.", cores, True, True)]
    rows = [run_setting(n, th, od, fz, args) for n, th, od, fz in settings]
    base = rows[0]
    print(f"{'setting':<42} {'eval fwd s':>10} {'train step s':>12} {'eval x':>7} {'train x':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['setting']:<42} error: {r['error']}")
            continue
        print(f"{r['setting']:<42} {r['eval_forward_s']:>10.2f} {r['train_step_s']:>12.2f} "
              f"{base['eval_forward_s'] / r['eval_forward_s']:>7.2f} {base['train_step_s'] / r['train_step_s']:>8.2f}")
    print("PyTorch twin: not run (this benchmark times Paddle settings only; the issue's twin numbers are "
          "eval 1.6 s / train step 8-10 s on this machine)")
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
