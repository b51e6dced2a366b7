#!/usr/bin/env python
"""Eval-forward and train-step speed of the faithful multimodal network on CPU, against its PyTorch twin.

Batch: B=2 posts, 2 captions and 2 evidence images each, 224x224 images, text length 128, random weights
(the issue's setting). Each setting runs in its own process (threads and CPU tuning are fixed before the
first GEMM), ``--warmup`` untimed steps then ``--steps`` timed ones. Ratios are measured in this one run:

    python benchmarks/multimodal_step.py [--warmup 2] [--steps 3] [--torch-python PYTHON] [--json]

Paddle settings:
  baseline      Paddle as the baseline ran it: its default of 1 thread, no tuning (PADDLE_MODELS_CPU_TUNING=0,
                Global.fast_linear_grad=false)
  N threads     all cores, still untuned
  defaults      all cores + what the project does by default: paddle_models.runtime.tune_cpu() (MKL's AVX2
                GEMM on AMD, no stride kernels, mallopt) and engine/fast_linear.py (Linear backward as GEMMs)
  + oneDNN      defaults + Global.onednn=true (oneDNN kernels in dygraph)
  + frozen emb  defaults + Arch.freeze_word_embeddings=true: the 192M-parameter word table is not trained
                (changes training, so it is an option, off by default)

The PyTorch twin (benchmarks/torch_twin.py: transformers' XLM-R-sized encoder + torchvision resnet101, same
heads, AdamW) runs in a child of ``--torch-python`` (default: this Python when it has torch, torchvision
and transformers; otherwise the twin is skipped and says so). ``x twin`` = twin seconds / paddle seconds
(above 1: paddle is faster).
"""
import argparse
import importlib.util
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

    import paddle_models  # noqa: F401  (applies runtime.tune_cpu() unless PADDLE_MODELS_CPU_TUNING=0)
    from paddle_models import get_task, load_config
    from paddle_models.engine.fast_linear import use_fast_linear_grad
    from paddle_models.multimodal.network import network_from_config

    paddle.base.core.set_num_threads(args.threads)
    paddle.set_flags({"FLAGS_use_onednn": bool(args.onednn), "FLAGS_use_mkldnn": bool(args.onednn)})
    cfg = load_config(args.config, [f"Global.output_dir={ROOT}/output/bench_mm",
                                    f"Arch.freeze_word_embeddings={str(args.freeze_emb).lower()}"])
    paddle.seed(0)
    model = network_from_config(cfg["Arch"])
    if args.fast_linear:
        use_fast_linear_grad(model)
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
    if args.exported:  # Global.eval_engine=inference: the exported graph on Paddle Inference (+ oneDNN)
        import tempfile

        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        from inference import make_tokenizer

        from paddle_models.engine.export import export_model
        from paddle_models.engine.predictor import Predictor, PredictorModule

        work = tempfile.mkdtemp(prefix="bench_mm_export_")
        cfg = load_config(args.config, [f"Global.output_dir={work}/run", f"Data.max_captions={NC}",
                                        f"Data.max_evidence_images={NI}",
                                        f"Data.tokenizer={make_tokenizer(os.path.join(work, 'tok'))}"])
        export_model(cfg, os.path.join(work, "export"), task=get_task("multimodal")(cfg), model=model,
                     threads=args.threads, check_onednn=False)
        model = PredictorModule(Predictor(os.path.join(work, "export"), threads=args.threads, onednn="on"))
    with paddle.no_grad():
        for _ in range(args.warmup):
            model(**task.inputs(t))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(**task.inputs(t))
        eval_s = (time.perf_counter() - t0) / args.steps
    if args.exported:
        print(json.dumps({"eval_forward_s": eval_s, "eval_samples_per_s": B / eval_s}))
        return
    model.train()
    opt = task.build_optimizers(model, 100)[0][0]

    def step():
        loss, _ = task.forward_loss(model, t)
        loss.backward()
        opt.step()
        opt.clear_grad()

    for _ in range(args.warmup):  # the first creates the AdamW moments
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    train_s = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"eval_forward_s": eval_s, "train_step_s": train_s,
                      "eval_samples_per_s": B / eval_s, "train_samples_per_s": B / train_s}))


def _last_json(p):
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_setting(name, threads, tuned, onednn, freeze, args, exported=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOG_minloglevel="2",
               PADDLE_MODELS_CPU_TUNING="1" if tuned else "0")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(threads), "--warmup",
           str(args.warmup), "--steps", str(args.steps), "--config", args.config]
    cmd += ["--fast-linear"] if tuned else []
    cmd += ["--onednn"] if onednn else []
    cmd += ["--freeze-emb"] if freeze else []
    cmd += ["--exported"] if exported else []
    return {"setting": name, **_last_json(subprocess.run(cmd, env=env, capture_output=True, text=True))}


def _fmt(v):
    return "-" if v is None else f"{v:.2f}"


def _ratio(ref, r, key):
    """ref seconds / r seconds (above 1: r is faster), or '-' where r has no such timing."""
    return "-" if r.get(key) is None or ref.get(key) is None else f"{ref[key] / r[key]:.2f}"


def twin_python(args):
    if args.torch_python:
        return args.torch_python
    if all(importlib.util.find_spec(m) for m in ("torch", "torchvision", "transformers")):
        return sys.executable
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--onednn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--freeze-emb", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fast-linear", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--exported", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (mean)")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml"))
    ap.add_argument("--torch-python", default=None,
                    help="a Python with torch, torchvision and transformers for the twin (default: this one, if it has them)")
    ap.add_argument("--only", default=None, help="comma-separated setting keys: baseline,threads,defaults,onednn,frozen")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)
    cores = os.cpu_count() or 1
    settings = [("baseline", "paddle as the baseline runs it (1 thread)", 1, False, False, False),
                ("threads", f"{cores} threads, untuned", cores, False, False, False),
                ("defaults", f"{cores} threads + project defaults", cores, True, False, False),
                ("onednn", "defaults + oneDNN", cores, True, True, False),
                ("frozen", "defaults + frozen word emb. (option)", cores, True, False, True),
                ("exported", "exported graph, Paddle Inference + oneDNN", cores, True, False, False)]
    if args.only:
        keep = set(args.only.split(","))
        settings = [s for s in settings if s[0] in keep]
    rows = [dict(run_setting(name, th, tuned, od, fz, args, exported=key == "exported"), key=key)
            for key, name, th, tuned, od, fz in settings]
    py = twin_python(args)
    twin = None
    if py:
        cmd = [py, os.path.join(ROOT, "benchmarks", "torch_twin.py"), "--threads", str(cores), "--warmup",
               str(args.warmup), "--steps", str(args.steps)]
        twin = {"setting": f"PyTorch twin ({cores} threads)", "key": "twin",
                **_last_json(subprocess.run(cmd, capture_output=True, text=True))}
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["key"] == "baseline"), ok[0] if ok else None)
    have_twin = twin is not None and "error" not in twin
    print(f"{'setting':<40} {'eval fwd s':>10} {'train s':>8} {'eval x base':>11} {'train x base':>12}"
          + (f" {'eval x twin':>11} {'train x twin':>12}" if have_twin else ""))
    for r in rows + ([twin] if twin else []):
        if "error" in r:
            print(f"{r['setting']:<40} error: {r['error']}")
            continue
        line = (f"{r['setting']:<40} {r['eval_forward_s']:>10.2f} {_fmt(r.get('train_step_s')):>8} "
                f"{base['eval_forward_s'] / r['eval_forward_s']:>11.2f} {_ratio(base, r, 'train_step_s'):>12}")
        if have_twin:
            line += f" {twin['eval_forward_s'] / r['eval_forward_s']:>11.2f} {_ratio(twin, r, 'train_step_s'):>12}"
        print(line)
    if twin is None:
        print("PyTorch twin: not run (torch, torchvision and transformers are not importable here; pass "
              "--torch-python PYTHON to time it in the same run)")
    if args.json:
        print(json.dumps({"rows": rows, "twin": twin}))


if __name__ == "__main__":
    main()
