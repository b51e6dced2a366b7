#!/usr/bin/env python
"""Eval-forward and train-step speed of the faithful multimodal network on CPU, against its PyTorch twin.

Batch: B=2 posts, 2 captions and 2 evidence images each, 224x224 images, text length 128, random weights
(the issue's setting). Each setting runs in its own process (threads and CPU tuning are fixed before the
first GEMM), ``--warmup`` untimed steps then ``--steps`` timed ones. Ratios are measured in this one run,
and the CPU it ran on is printed first (``cpu`` in the JSON):

    python benchmarks/multimodal_step.py [--warmup 2] [--steps 3] [--torch-python PYTHON] [--json]

Paddle settings (eval forward, then the AdamW train step, in the same process):
  baseline      Paddle as the baseline ran it: its default of 1 thread, no tuning (PADDLE_MODELS_CPU_TUNING=0,
                Global.fast_linear_grad=false), dygraph eval
  threads       all cores, still untuned
  defaults      all cores + what the project does by default on this CPU: runtime.tune_cpu() (the CPU's plan),
                engine/fast_linear.py (Linear backward as GEMMs), engine/fast_embedding.py (the word
                table's gradient in a kept table), and eval the way Global.eval_engine: auto
                evaluates (the plan's engine: the exported graph on Paddle Inference + oneDNN). The row also
                gives the dygraph eval forward (``dygraph_eval_forward_s``)
  onednn        defaults + Global.onednn=true (oneDNN kernels in dygraph), dygraph eval
  frozen        defaults + Arch.freeze_word_embeddings=true (the 192M-parameter word table is not trained:
                changes training, so it is an option, off by default)
  bf16          defaults + Global.precision=bf16: eval on the exported graph with oneDNN bfloat16; the train
                step is fp32 (Paddle 3.3.1 has no bfloat16 training on CPU; see the README)

The PyTorch twin (benchmarks/torch_twin.py: transformers' ErnieMModel + torchvision resnet101, same
heads, AdamW) runs in a child of ``--torch-python`` (default: this Python when it has torch, torchvision
and transformers; otherwise the twin is skipped and says so), in fp32 (``twin``) and under
``torch.autocast("cpu", torch.bfloat16)`` (``twin_bf16``, when the CPU has native bfloat16). ``x twin`` =
twin seconds / paddle seconds (above 1: paddle is faster); the bf16 row is compared with ``twin_bf16``.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the environment before anything here imports paddle_models (whose import tunes the process and sets
# variables): every child starts from it, so the untuned rows and the twin get no tuning of ours
START_ENV = dict(os.environ)


def child(args):
    sys.path.insert(0, ROOT)
    import numpy as np
    import paddle

    import paddle_models  # noqa: F401  (applies runtime.tune_cpu() unless PADDLE_MODELS_CPU_TUNING=0)
    from paddle_models import get_task, load_config
    from paddle_models.engine.fast_embedding import use_fast_embedding_grad
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
        use_fast_embedding_grad(model)
    task = get_task("multimodal")(cfg)
    rng = np.random.RandomState(0)
    B, NC, NI = 2, 2, 2
    L, S = int(cfg["Data"]["max_len"]), int(cfg["Data"]["image_crop"])  # 128 and 224 for the faithful network
    vocab = cfg["Arch"]["ernie"]["vocab_size"]
    batch = {
        "input_ids": rng.randint(5, vocab, (B, L)).astype("int64"), "attention_mask": np.ones((B, L), "int64"),
        "caption_ids": rng.randint(5, vocab, (B, NC, L)).astype("int64"), "caption_mask": np.ones((B, NC, L), "int64"),
        "image": rng.randn(B, 3, S, S).astype("float32"),
        "evidence_images": rng.randn(B, NI, 3, S, S).astype("float32"),
        "evidence_mask": np.ones((B, NI), "float32"), "label": np.array([0, 1], "int64"),
    }
    t = {k: paddle.to_tensor(v) for k, v in batch.items()}

    def time_eval(m):
        with paddle.no_grad():
            for _ in range(args.warmup):
                m(**task.inputs(t))
            t0 = time.perf_counter()
            for _ in range(args.steps):
                m(**task.inputs(t))
            return (time.perf_counter() - t0) / args.steps

    model.eval()
    if args.part == "eval":
        res = exported_eval(args, cfg, task, model, time_eval, NC, NI)
        return print(json.dumps({**res, "eval_samples_per_s": B / res["eval_forward_s"]}))
    res = {"dygraph_eval_forward_s": time_eval(model)}
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
    res["train_step_s"] = (time.perf_counter() - t0) / args.steps
    res.update(eval_forward_s=res["dygraph_eval_forward_s"], eval_engine="dygraph")
    res.update(eval_samples_per_s=B / res["eval_forward_s"], train_samples_per_s=B / res["train_step_s"])
    print(json.dumps(res))


def exported_eval(args, cfg, task, model, time_eval, NC, NI):
    """The eval forward the way Global.eval_engine=inference runs it: the model exported (not timed) and run by
    a Paddle Inference predictor with oneDNN in ``args.precision``. In a process of its own: once a oneDNN
    predictor exists in a process, paddle's plain kernels run slower in it (and the other way round)."""
    import tempfile

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from inference import make_tokenizer

    from paddle_models import get_task, load_config
    from paddle_models.engine.export import export_model
    from paddle_models.engine.predictor import Predictor, PredictorModule

    work = tempfile.mkdtemp(prefix="bench_mm_export_")
    try:
        cfg = load_config(args.config, [f"Global.output_dir={work}/run", f"Data.max_captions={NC}",
                                        f"Data.max_evidence_images={NI}", f"Global.precision={args.precision}",
                                        f"Data.tokenizer={make_tokenizer(os.path.join(work, 'tok'))}"])
        export_model(cfg, os.path.join(work, "export"), task=get_task("multimodal")(cfg), model=model,
                     threads=args.threads, check_onednn=False)
        pred = Predictor(os.path.join(work, "export"), threads=args.threads, onednn="on")
        if pred.precision != args.precision:
            raise RuntimeError(f"the predictor runs {pred.precision}, not {args.precision}: {pred.onednn_note}")
        return {"eval_forward_s": time_eval(PredictorModule(pred)), "eval_engine": f"inference ({pred.precision})"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _last_json(p):
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit code {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_setting(name, threads, tuned, onednn, freeze, args, engine="dygraph", precision="fp32"):
    env = dict(START_ENV, OMP_NUM_THREADS=str(threads), GLOG_minloglevel="2",
               PADDLE_MODELS_CPU_TUNING="1" if tuned else "0")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(threads), "--warmup",
           str(args.warmup), "--steps", str(args.steps), "--config", args.config, "--precision", precision]
    cmd += ["--fast-linear"] if tuned else []
    cmd += ["--onednn"] if onednn else []
    cmd += ["--freeze-emb"] if freeze else []
    res = _last_json(subprocess.run(cmd + ["--part", "train"], env=env, capture_output=True, text=True))
    if engine == "inference" and "error" not in res:
        ev = _last_json(subprocess.run(cmd + ["--part", "eval"], env=env, capture_output=True, text=True))
        if "error" in ev:
            ev = {"error": f"exported eval: {ev['error']}"}
        res.update(ev)
    return {"setting": name, **res}


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


def run_twin(py, cores, args, bf16=False):
    cmd = [py, os.path.join(ROOT, "benchmarks", "torch_twin.py"), "--threads", str(cores), "--warmup",
           str(args.warmup), "--steps", str(args.steps)] + (["--bf16"] if bf16 else [])
    name = f"PyTorch twin ({cores} threads{', autocast bf16' if bf16 else ''})"
    return {"setting": name, "key": "twin_bf16" if bf16 else "twin",
            **_last_json(subprocess.run(cmd, env=START_ENV, capture_output=True, text=True))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--onednn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--freeze-emb", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fast-linear", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--part", default="train", choices=["train", "eval"], help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (mean)")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml"))
    ap.add_argument("--torch-python", default=None,
                    help="a Python with torch, torchvision and transformers for the twin "
                         "(default: this one, if it has them)")
    ap.add_argument("--only", default=None,
                    help="comma-separated setting keys: baseline,threads,defaults,onednn,frozen,bf16,twin,twin_bf16")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, ROOT)
    from paddle_models.runtime import cpu_info, cpu_name, cpu_plan

    cpu = cpu_info()
    plan = cpu_plan(cpu)
    cores = cpu["cores"]
    print(f"CPU: {cpu_name(cpu)} ({cores} cores; AVX-512 {cpu['avx512']}, AVX512-BF16 "
          f"{cpu['avx512_bf16']}, AMX {cpu['amx_tile']}); plan: {plan}", flush=True)
    settings = [("baseline", "paddle as the baseline runs it (1 thread)", 1, False, False, False, "dygraph", "fp32"),
                ("threads", f"{cores} threads, untuned", cores, False, False, False, "dygraph", "fp32"),
                ("defaults", f"{cores} threads + project defaults", cores, True, False, False, plan["eval_engine"],
                 "fp32"),
                ("onednn", "defaults + oneDNN in dygraph", cores, True, True, False, "dygraph", "fp32"),
                ("frozen", "defaults + frozen word emb. (option)", cores, True, False, True, plan["eval_engine"],
                 "fp32")]
    if plan["bf16"]:
        settings.append(("bf16", "defaults + Global.precision=bf16", cores, True, False, False, "inference", "bf16"))
    keep = set(args.only.split(",")) if args.only else None
    settings = [s for s in settings if keep is None or s[0] in keep]
    rows = [dict(run_setting(name, th, tuned, od, fz, args, engine, prec), key=key)
            for key, name, th, tuned, od, fz, engine, prec in settings]
    py = twin_python(args)
    twin = twin_bf16 = None
    if py and (keep is None or "twin" in keep or "defaults" in keep):
        twin = run_twin(py, cores, args)
    if py and plan["bf16"] and (keep is None or "twin_bf16" in keep or "bf16" in keep):
        twin_bf16 = run_twin(py, cores, args, bf16=True)
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["key"] == "baseline"), ok[0] if ok else None)
    print(f"{'setting':<40} {'eval fwd s':>10} {'train s':>8} {'eval x base':>11} {'train x base':>12}"
          f" {'eval x twin':>11} {'train x twin':>12}")
    for r in rows + [x for x in (twin, twin_bf16) if x]:
        if "error" in r:
            print(f"{r['setting']:<40} error: {r['error']}")
            continue
        ref = twin_bf16 if r["key"] in ("bf16", "twin_bf16") else twin
        ref = ref if ref is not None and "error" not in ref else None
        line = (f"{r['setting']:<40} {r['eval_forward_s']:>10.2f} {_fmt(r.get('train_step_s')):>8} "
                f"{_ratio(base, r, 'eval_forward_s'):>11} {_ratio(base, r, 'train_step_s'):>12}")
        line += (f" {_ratio(ref, r, 'eval_forward_s'):>11} {_ratio(ref, r, 'train_step_s'):>12}" if ref else
                 f" {'-':>11} {'-':>12}")
        print(line)
    for r in ok:
        if r.get("eval_engine", "dygraph") != "dygraph":
            print(f"  {r['key']}: eval on {r['eval_engine']}; its dygraph eval forward: "
                  f"{r['dygraph_eval_forward_s']:.2f} s")
    if twin is None and keep is None:
        print("PyTorch twin: not run (torch, torchvision and transformers are not importable here; pass "
              "--torch-python PYTHON to time it in the same run)")
    if args.json:
        print(json.dumps({"rows": rows, "twin": twin, "twin_bf16": twin_bf16,
                          "cpu": {**cpu, "name": cpu_name(cpu), "plan": plan}}))


if __name__ == "__main__":
    main()
