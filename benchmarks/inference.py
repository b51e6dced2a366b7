#!/usr/bin/env python
"""Inference latency and throughput of the multimodal network: dygraph eval vs Paddle Inference (oneDNN on
and off) vs onnxruntime, measured side by side in one run, at batch 1 and 8.

    nice -n 10 python benchmarks/inference.py [--skip-faithful] [--threads 2] [--json]

Models: the demo-size network (configs/multimodal/jsonl_small.yaml) and the faithful one
(configs/multimodal/ernie_m_resnet101.yaml: ERNIE-M base + ResNet-101, 345M parameters), both with random
weights (timing does not depend on the values). Each model is exported with tools/export.py's code (so the
parity checks run too) into a temporary folder. Inputs are full-size batches of the config: texts padded
to Data.max_len, Data.max_captions caption slots and Data.max_evidence_images evidence images per item
(the faithful model's evidence counts can be lowered with --faithful-captions / --faithful-evidence to keep
the CPU run short). Every backend uses the same number of CPU threads. Reported per backend and batch
size: p50 / p95 latency (ms) and throughput (items/s); and the ratio of each backend's p50 to the dygraph
p50 at the same batch size (the goal: Paddle Inference <= 0.6x dygraph at batch 1).

The fp32 floor: the benchmark counts the arithmetic of the model's convolutions and Linear layers (forward
hooks, batch 1; attention products, norms and activations left out, so it is a lower bound) and measures
this core's best fp32 GEMM rate in the same run (paddle's MKL matmul and, if installed, onnxruntime's, on
large products). FLOPs / rate is the least time any fp32 engine can take on this CPU; divided by the dygraph
p50 it is the lowest ratio the 0.6x goal could reach here ("fp32 floor").

Timing runs in two phases per model: dygraph, Paddle Inference without oneDNN and onnxruntime first, in
alternating blocks of back-to-back calls; then the oneDNN predictor is created and timed beside dygraph
again (the "dygraph (beside oneDNN)" row). Once a oneDNN predictor exists in a process, paddle's plain CPU
kernels run slower there, so mixing both in one serving process is not advised.

int8 (``--int8-methods``, default all of paddle_models.engine.quantize.METHODS): the export's ONNX graph is
quantized by onnxruntime (calibrated on ``--int8-calibration`` synthetic items, other seeds than the timed
batches) and timed in phase 1 beside the fp32 backends; each int8 row also gives its p50 ratio to fp32 Paddle
Inference (without oneDNN) and its agreement with the fp32 ONNX graph on ``--int8-heldout`` further synthetic
items (same class rate, max |prob diff|). With random weights that agreement says little about a trained
model; the export's gate measures it on real held-out items.
"""
import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from paddle_models.runtime import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "multimodal", "jsonl_small.yaml")
FAITHFUL_CONFIG = os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml")
# result rows in table order (the "dygraph_with_onednn_predictor" row is dygraph timed in the oneDNN phase)
INT8_ROWS = {"onnx-static": "onnxruntime_int8", "onnx-static-qdq": "onnxruntime_int8_qdq",
             "onnx-dynamic": "onnxruntime_int8_dynamic"}
ROWS = ("dygraph", "paddle_inference", "paddle_inference_freeing_buffers", "onnxruntime", *INT8_ROWS.values(),
        "dygraph_with_onednn_predictor", "paddle_inference_onednn",
        "paddle_inference_onednn_bf16")


def synthetic_batch(cfg, vocab: int, batch: int, captions: int, evidence: int, seed: int = 0) -> dict:
    """A collated batch at the config's full sizes: every text max_len tokens, every slot filled."""
    rng = np.random.RandomState(seed)
    d = cfg["Data"]
    L, s = int(d["max_len"]), int(d["image_crop"])
    ids = rng.randint(5, vocab, size=(batch, L)).astype("int64")
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    cids = rng.randint(5, vocab, size=(batch, captions, L)).astype("int64")
    return {"input_ids": ids, "attention_mask": np.ones((batch, L), "int64"),
            "caption_ids": cids, "caption_mask": np.ones((batch, captions, L), "int64"),
            "image": rng.randn(batch, 3, s, s).astype("float32"),
            "evidence_images": rng.randn(batch, evidence, 3, s, s).astype("float32"),
            "evidence_mask": np.ones((batch, evidence), "float32")}


def make_tokenizer(out_dir: str) -> str:
    """A throw-away SentencePiece tokenizer (the export copies one; its vocabulary does not affect timing)."""
    from paddle_models.multimodal.tokenizer import train_tokenizer

    words = "the a post photo image news rumor true false today city people video says report".split()
    rng = np.random.RandomState(0)
    texts = [" ".join(rng.choice(words, size=rng.randint(3, 12))) for _ in range(300)]
    train_tokenizer(texts, out_dir, vocab_size=60)
    return out_dir


def timed_blocks(fns: dict, warmup: int, iters: int, budget_s: float, block: int = 10) -> dict:
    """Latencies of each function, timed in alternating blocks: each round runs ``block`` back-to-back calls
    of every backend in turn (after one untimed call that warms its caches again). Back-to-back calls are
    how a served model runs; alternating blocks spread a shared machine's load over every backend alike.
    (Interleaving single calls instead made each backend evict the others' weights from the CPU caches:
    the demo model's Paddle Inference p50 went from 2.0 to 2.9 ms that way.) Stops after ``iters`` calls per
    backend or ``budget_s`` seconds (at least 3 rounds)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    lat = {k: [] for k in fns}
    t_end = time.perf_counter() + budget_s
    block = max(1, min(block, iters))
    rounds = 0
    while min(len(v) for v in lat.values()) < iters:
        for k, fn in fns.items():
            fn()
            for _ in range(block):
                t = time.perf_counter()
                fn()
                lat[k].append(time.perf_counter() - t)
        rounds += 1
        if rounds >= 3 and time.perf_counter() > t_end:
            break
    return lat


def summarize(lat: list, batch: int) -> dict:
    a = np.asarray(lat) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "min_ms": round(float(np.min(a)), 3),
            "items_per_s": round(batch * 1000.0 / float(np.mean(a)), 2), "runs": len(lat)}


def conv_linear_flops(model, inputs) -> int:
    """FLOPs (2 per multiply-add) of the Conv2D and Linear layers in one forward pass on ``inputs``."""
    import paddle

    total = [0]

    def hook(layer, args, out):
        w = layer.weight
        if isinstance(layer, paddle.nn.Linear):  # weight [in, out]
            total[0] += 2 * int(np.prod(args[0].shape[:-1])) * int(w.shape[0]) * int(w.shape[1])
        else:  # weight [out, in/groups, kh, kw]: every output element is one dot product of that length
            total[0] += 2 * int(np.prod(out.shape)) * int(np.prod(w.shape[1:]))

    handles = [m.register_forward_post_hook(hook) for m in model.sublayers()
               if isinstance(m, (paddle.nn.Linear, paddle.nn.Conv2D))]
    try:
        with paddle.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def gemm_peak_gflops(threads: int, reps: int = 5) -> dict:
    """This core's best fp32 GEMM rate (GFLOPS, best of ``reps``) by engine, on large products."""
    import paddle

    import paddle_models  # noqa: F401  (tune_cpu: MKL's AVX2 GEMM path on AMD, as every model run gets it)

    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (256, 768, 3072)]
    rates = {}

    def best(fn, flops):
        fn()
        return round(flops / min(_timed(fn) for _ in range(reps)) / 1e9, 1)

    rng = np.random.RandomState(0)
    for m, k, n in shapes:
        a = paddle.to_tensor(rng.randn(m, k).astype("float32"))
        b = paddle.to_tensor(rng.randn(k, n).astype("float32"))
        rates[f"paddle_mkl_{m}x{k}x{n}"] = best(lambda a=a, b=b: paddle.matmul(a, b).numpy(), 2 * m * k * n)
    try:
        import onnxruntime  # noqa: F401
        from onnx import TensorProto, helper
    except ImportError:
        helper = None
    if helper is not None:
        from paddle_models.engine.onnx import onnx_session

        for m, k, n in shapes:
            graph = helper.make_graph(
                [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
                [helper.make_tensor("b", TensorProto.FLOAT, [k, n], rng.randn(k * n).astype("float32"))])
            sess = onnx_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
                                .SerializeToString(), threads)
            a = rng.randn(m, k).astype("float32")
            rates[f"onnxruntime_{m}x{k}x{n}"] = best(lambda s=sess, a=a: s.run(None, {"a": a}), 2 * m * k * n)
    return {"best": max(rates.values()), "by_engine_and_shape": rates}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_model(label: str, config: str, args, overrides: list, captions: int, evidence: int,
                warmup: int, iters: int) -> dict:
    """Export the model of ``config`` (random weights) into a temporary folder and time every backend on it;
    return the model's results (parameters, parity, per-backend rows)."""
    work = tempfile.mkdtemp(prefix=f"bench_{label}_")
    try:
        bench = ModelBench(label, args, captions, evidence, warmup, iters)
        bench.build_and_export(config, overrides, work)
        bench.add_fp32_runners()
        bench.prepare_batches()
        # Phase 1 without any oneDNN predictor in the process: once one exists, paddle's plain CPU kernels
        # ran slower in the same process (demo model, Paddle Inference without oneDNN: 1.6 -> 2.2 ms).
        bench.time_phase([n for n in ("dygraph", "paddle_inference", "paddle_inference_freeing_buffers",
                                      "onnxruntime", *INT8_ROWS.values()) if n in bench.runners], 1)
        for n in INT8_ROWS.values():  # free the int8 sessions before the oneDNN phase
            bench.runners.pop(n, None)
        gc.collect()
        bench.onednn_phase()
        return bench.out
    finally:
        gc.collect()
        shutil.rmtree(work, ignore_errors=True)


class ModelBench:
    """One model's run of the benchmark: its export, a runner per backend (batch dict -> first output), the
    timed batches with their dygraph reference outputs, and the results in ``out``."""

    def __init__(self, label: str, args, captions: int, evidence: int, warmup: int, iters: int):
        self.label, self.args, self.captions, self.evidence = label, args, captions, evidence
        self.warmup, self.iters = warmup, iters
        self.runners, self.predictors, self.out = {}, {}, {}

    def build_and_export(self, config: str, overrides: list, work: str) -> None:
        """The model of ``config`` with random weights, exported with the parity checks into ``work/export``."""
        import paddle

        from paddle_models.config import load_config
        from paddle_models.engine.export import export_model
        from paddle_models.registry import get_task

        args, label = self.args, self.label
        tok = make_tokenizer(os.path.join(work, "tokenizer"))
        self.cfg = load_config(config, overrides + [f"Data.tokenizer={tok}", f"Global.output_dir={work}/run"])
        paddle.base.core.set_num_threads(args.threads)
        paddle.seed(0)
        self.task = get_task("multimodal")(self.cfg)
        t = time.time()
        self.model = self.task.build_model()
        self.model.eval()
        n_params = int(sum(int(np.prod(p.shape)) for p in self.model.parameters()))
        print(f"[{label}] {n_params:,} parameters, built in {time.time() - t:.1f} s; exporting...", flush=True)
        self.export_dir = os.path.join(work, "export")
        exp = export_model(self.cfg, self.export_dir, task=self.task, model=self.model, onnx=not args.skip_onnx,
                           threads=args.threads, check_onednn=not args.skip_onednn)
        print(f"[{label}] exported in {exp['seconds']:.1f} s, parity {exp['parity_max_rel_err']:.2e}"
              + ("" if args.skip_onnx else f", onnx parity {exp['onnx_parity_max_rel_err']:.2e}"), flush=True)
        data = self.cfg["Data"]
        self.out = {"config": os.path.relpath(config, ROOT), "parameters": n_params,
                    "parity_max_rel_err": exp["parity_max_rel_err"],
                    "onednn_probe": exp["variants"]["model"].get("onednn"),
                    "inputs": {"max_len": int(data["max_len"]), "captions": self.captions,
                               "evidence_images": self.evidence, "image": int(data["image_crop"])},
                    "results": {}}
        if not args.skip_onnx:
            self.out["onnx_parity_max_rel_err"] = exp["onnx_parity_max_rel_err"]
        self.vocab = int(self.cfg["Arch"]["ernie"]["vocab_size"])

    def add_fp32_runners(self) -> None:
        """dygraph, Paddle Inference without oneDNN (keeping and freeing buffers), onnxruntime and the int8
        graphs."""
        import paddle

        from paddle_models.engine.predictor import OnnxPredictor, Predictor

        args, edir, model = self.args, self.export_dir, self.model
        spec = self.task.export_input_spec(model)

        def dygraph(batch):
            with paddle.no_grad():
                return model(*[paddle.to_tensor(batch[s.name]) for s in spec]).numpy()

        self.runners["dygraph"] = dygraph
        self.add_predictor("paddle_inference", Predictor(edir, threads=args.threads, onednn="off",
                                                         keep_buffers=args.keep_buffers))
        if self.predictors["paddle_inference"].keep_buffers:  # Paddle's default freeing, timed beside it
            self.add_predictor("paddle_inference_freeing_buffers",
                               Predictor(edir, threads=args.threads, onednn="off", keep_buffers="off"), report=False)
        if not args.skip_onnx:  # the project's onnxruntime engine: the same input checks as the Predictor
            self.add_predictor("onnxruntime", OnnxPredictor(edir, threads=args.threads), report=False)
        if not args.skip_onnx and args.int8_methods:
            add_int8_runners(self.runners, self.out, edir, self.cfg, self.vocab, self.captions, self.evidence, args,
                             self.label)

    def add_predictor(self, name: str, predictor, report: bool = True) -> None:
        """A runner for ``predictor``; ``report``: its keep_buffers and kept bytes go into the results."""
        self.runners[name] = lambda batch: predictor.run_list(batch)[0]
        if report:
            self.predictors[name] = predictor

    def prepare_batches(self) -> None:
        """The timed batches (one per batch size), their dygraph outputs, and the conv/linear GFLOP per item."""
        import paddle

        args = self.args
        self.batches = {bs: synthetic_batch(self.cfg, self.vocab, bs, self.captions, self.evidence, seed=bs)
                        for bs in args.batch_sizes}
        self.reference = {bs: self.runners["dygraph"](self.batches[bs]) for bs in args.batch_sizes}
        one = synthetic_batch(self.cfg, self.vocab, 1, self.captions, self.evidence)
        spec = self.task.export_input_spec(self.model)
        self.out["conv_linear_gflop_per_item"] = round(conv_linear_flops(
            self.model, [paddle.to_tensor(one[s.name]) for s in spec]) / 1e9, 3)

    def time_phase(self, names: list, phase: int) -> None:
        """Time the runners ``names`` side by side at every batch size; record and print a row for each."""
        args = self.args
        for bs in args.batch_sizes:
            batch = self.batches[bs]
            outs = {n: self.runners[n](batch) for n in names}
            lat = timed_blocks({n: (lambda f=self.runners[n], b=batch: f(b)) for n in names}, self.warmup,
                               self.iters, args.budget, block=args.block)
            summaries = {n: summarize(lat[n], bs) for n in names}
            for name in names:
                row = self.result_row(name, summaries, outs[name], bs, phase)
                print(f"[{self.label}] batch {bs:2d} {name:24s} p50 {row['p50_ms']:10.2f} ms  p95 "
                      f"{row['p95_ms']:10.2f} ms  {row['items_per_s']:9.2f} items/s  ({row['runs']} runs, rel err "
                      f"{row['max_rel_err_vs_dygraph']:.1e})", flush=True)

    def result_row(self, name: str, summaries: dict, output, bs: int, phase: int) -> dict:
        """``summaries[name]`` with its ratios to dygraph and Paddle Inference and its agreement with the
        dygraph reference, stored under ``<name>@<batch size>`` (dygraph in phase 2: its own row name)."""
        from paddle_models.engine.parity import max_rel_err

        row, base, pi = summaries[name], summaries["dygraph"], summaries.get("paddle_inference")
        if pi is not None and name != "dygraph":
            row["p50_ratio_vs_paddle_inference"] = round(row["p50_ms"] / pi["p50_ms"], 3)
        row["max_rel_err_vs_dygraph"] = max_rel_err([output], [self.reference[bs]])
        row["argmax_agrees"] = float(np.mean(output.argmax(-1) == self.reference[bs].argmax(-1)))
        if name == "dygraph":
            row["phase"] = phase
            key = f"dygraph@{bs}" if phase == 1 else f"dygraph_with_onednn_predictor@{bs}"
        else:
            row["p50_ratio_vs_dygraph"] = round(row["p50_ms"] / base["p50_ms"], 3)
            key = f"{name}@{bs}"
        self.out["results"][key] = row
        return row

    def onednn_phase(self) -> None:
        """Phase 2: the oneDNN predictor (and bf16 where the CPU has it) timed beside dygraph; then the
        predictors' keep_buffers and kept bytes."""
        from paddle_models.engine.predictor import Predictor, bf16_supported

        args, edir = self.args, self.export_dir
        if args.skip_onednn:
            self.out["onednn_note"] = "skipped (--skip-onednn)"
        else:
            pi_on = Predictor(edir, threads=args.threads, onednn="on", keep_buffers=args.keep_buffers)
            if pi_on.onednn:
                self.add_predictor("paddle_inference_onednn", pi_on)
                phase2 = ["dygraph", "paddle_inference_onednn"]
                if bf16_supported() and not args.skip_bf16:  # opt-in precision: not the exported function exactly
                    self.add_predictor("paddle_inference_onednn_bf16",
                                       Predictor(edir, threads=args.threads, onednn="on", precision="bf16",
                                                 keep_buffers=args.keep_buffers))
                    phase2.append("paddle_inference_onednn_bf16")
                self.time_phase(phase2, 2)  # ratios to the dygraph timed beside them
            else:
                self.out["onednn_note"] = pi_on.onednn_note
        self.out["keep_buffers"] = {k: p.keep_buffers for k, p in self.predictors.items()}
        self.out["kept_bytes"] = {k: p.kept_bytes for k, p in self.predictors.items() if p.kept_bytes is not None}


def add_int8_runners(runners: dict, out: dict, edir: str, cfg, vocab: int, captions: int, evidence: int, args,
                     label: str) -> None:
    """Quantize the export's ONNX graph with each of ``args.int8_methods`` (calibrated on synthetic items) and
    add an onnxruntime runner per int8 graph; record each method's quantization time and its agreement with
    the fp32 ONNX graph on further synthetic items in ``out["int8"]``."""
    from paddle_models.engine.onnx import onnx_session
    from paddle_models.engine.quantize import quantize_and_check

    cal = [synthetic_batch(cfg, vocab, 1, captions, evidence, seed=1000 + i) for i in range(args.int8_calibration)]
    held = [synthetic_batch(cfg, vocab, 1, captions, evidence, seed=5000 + i) for i in range(args.int8_heldout)]
    out["int8"] = {"calibration_items": len(cal), "heldout_items": len(held), "methods": {}}
    for method in args.int8_methods:
        f = os.path.join(edir, f"model.{method}.int8.onnx")
        t = time.time()
        res = quantize_and_check(os.path.join(edir, "model.onnx"), f, cal, held, method=method, min_agreement=0.0,
                                 threads=args.threads)
        a = res["agreement"]
        out["int8"]["methods"][method] = {"seconds": round(time.time() - t, 1), "bytes": res["bytes"],
                                          "same_class_rate": a["same_class_rate"], "max_prob_diff": a["max_prob_diff"]}
        print(f"[{label}] int8 {method}: quantized in {time.time() - t:.1f} s ({res['bytes'] / 2**20:.0f} MiB); "
              f"same class as fp32 on {a['same_class_rate']:.2%} of {a['items']} synthetic items, max |prob diff| "
              f"{a['max_prob_diff']:.2e}", flush=True)
        sess = onnx_session(f, args.threads)
        names = [i.name for i in sess.get_inputs()]
        runners[INT8_ROWS[method]] = lambda b, s=sess, n=names: s.run(None, {k: b[k] for k in n})[0]


def print_table(label: str, res: dict, batch_sizes):
    print(f"\n### {label}: {res['config']} ({res['parameters']:,} parameters; inputs {res['inputs']})")
    kept = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in res.get("kept_bytes", {}).items())
    print(f"(Paddle Inference keep_buffers: {res.get('keep_buffers')}{'; kept ' + kept if kept else ''})")
    print("| backend | batch | p50 ms | p95 ms | min ms | items/s | p50 vs dygraph | p50 vs Paddle Inference fp32 "
          "| argmax agrees | max rel err |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for bs in batch_sizes:
        for name in ROWS:
            r = res["results"].get(f"{name}@{bs}")
            if r:
                ratio = f"{r['p50_ratio_vs_dygraph']:.2f}x" if "p50_ratio_vs_dygraph" in r else "1.00x"
                vs_pi = f"{r['p50_ratio_vs_paddle_inference']:.2f}x" if "p50_ratio_vs_paddle_inference" in r else "-"
                print(f"| {name} | {bs} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['min_ms']:.2f} | "
                      f"{r['items_per_s']:.2f} | {ratio} | {vs_pi} | {r['argmax_agrees']:.2f} | "
                      f"{r['max_rel_err_vs_dygraph']:.1e} |")
    for method, m in (res.get("int8") or {}).get("methods", {}).items():
        print(f"(int8 {method}: same class as fp32 ONNX on {m['same_class_rate']:.2%} of "
              f"{res['int8']['heldout_items']} synthetic items, max |prob diff| {m['max_prob_diff']:.2e}; "
              f"quantized in {m['seconds']} s, {m['bytes'] / 2**20:.0f} MiB)")
    if res.get("onednn_note"):
        print(f"(oneDNN: {res['onednn_note']})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for every backend (1 is steadiest on a "
                                                           "shared machine)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (demo model)")
    ap.add_argument("--iters", type=int, default=60, help="timed rounds per batch size, at most (demo model)")
    ap.add_argument("--faithful-warmup", type=int, default=1)
    ap.add_argument("--faithful-iters", type=int, default=5)
    ap.add_argument("--block", type=int, default=10, help="back-to-back calls per backend and round")
    ap.add_argument("--budget", type=float, default=30.0, help="stop timing after this many seconds per model and "
                                                              "batch size (at least 3 rounds)")
    ap.add_argument("--skip-faithful", action="store_true", help="only the demo-size model")
    ap.add_argument("--skip-demo", action="store_true", help="only the faithful model")
    ap.add_argument("--skip-onnx", action="store_true", help="no ONNX export / onnxruntime")
    ap.add_argument("--keep-buffers", choices=["auto", "on", "off"], default="auto",
                    help="the Paddle Inference predictors' keep_buffers (auto: on for weights under 64 MiB)")
    ap.add_argument("--skip-floor", action="store_true", help="no GEMM-rate measurement / fp32 floor")
    ap.add_argument("--skip-bf16", action="store_true", help="no bfloat16 Paddle Inference row (opt-in precision)")
    ap.add_argument("--skip-onednn", action="store_true", help="no oneDNN phase (fp32 / bf16 oneDNN rows)")
    ap.add_argument("--int8-methods", nargs="*", default=list(INT8_ROWS),
                    choices=list(INT8_ROWS), help="int8 onnxruntime rows (none: no int8 rows)")
    ap.add_argument("--int8-calibration", type=int, default=16, help="synthetic items to calibrate int8 on")
    ap.add_argument("--int8-heldout", type=int, default=16,
                    help="further synthetic items on which int8 is compared with fp32")
    ap.add_argument("--faithful-captions", type=int, default=1,
                    help="caption slots per item for the faithful model (its config keeps 5)")
    ap.add_argument("--faithful-evidence", type=int, default=1,
                    help="evidence images per item for the faithful model (its config keeps 5)")
    ap.add_argument("--nice", type=int, default=10, help="lower this process's CPU priority (shared machines)")
    ap.add_argument("--json", action="store_true", help="print all results as one JSON line at the end")
    args = ap.parse_args(argv)
    if args.nice:
        try:
            os.nice(args.nice)
        except OSError:
            pass
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    import paddle

    paddle.set_device("cpu")
    results = {"threads": args.threads, "paddle": paddle.__version__, "cpu": cpu_name(), "cpu_count": os.cpu_count(),
               "models": {}}
    print(f"CPU: {results['cpu']} ({os.cpu_count()} cores), {args.threads} thread(s) per backend", flush=True)
    if not args.skip_demo:
        from paddle_models.config import load_config

        c = load_config(DEMO_CONFIG)
        results["models"]["demo"] = bench_model("demo", DEMO_CONFIG, args, [], int(c["Data"]["max_captions"]),
                                                int(c["Data"]["max_evidence_images"]), args.warmup, args.iters)
    if not args.skip_faithful:
        results["models"]["faithful"] = bench_model(
            "faithful", FAITHFUL_CONFIG, args,
            [f"Data.max_captions={args.faithful_captions}", f"Data.max_evidence_images={args.faithful_evidence}"],
            args.faithful_captions, args.faithful_evidence, args.faithful_warmup, args.faithful_iters)
    if not args.skip_floor:
        results["gemm_peak_gflops"] = gemm_peak_gflops(args.threads)
    print(f"\nCPU: {results['cpu']} ({os.cpu_count()} cores); {args.threads} thread(s) per backend")
    for label, res in results["models"].items():
        print_table(label, res, args.batch_sizes)
    goal = []
    for label, res in results["models"].items():
        r = res["results"]
        best = min((r[k]["p50_ratio_vs_dygraph"] for k in ("paddle_inference_onednn@1", "paddle_inference@1")
                    if k in r), default=None)
        if best is not None:
            goal.append(f"{label}: best Paddle Inference (fp32, the exported function) p50 at batch 1 = {best:.2f}x "
                        f"dygraph ({'meets' if best <= 0.6 else 'misses'} the 0.6x goal)")
            b16 = r.get("paddle_inference_onednn_bf16@1")
            if b16:
                goal.append(f"{label}: Paddle Inference bf16 (opt-in precision) p50 at batch 1 = "
                            f"{b16['p50_ratio_vs_dygraph']:.2f}x dygraph, max rel err "
                            f"{b16['max_rel_err_vs_dygraph']:.1e}")
            res["goal_met"] = best <= 0.6
        i8 = r.get("onnxruntime_int8@1")
        if i8:
            goal.append(f"{label}: int8 (onnxruntime, onnx-static) p50 at batch 1 = {i8['p50_ratio_vs_dygraph']:.2f}x "
                        f"dygraph, {i8.get('p50_ratio_vs_paddle_inference', float('nan')):.2f}x fp32 Paddle Inference")
        peak = results.get("gemm_peak_gflops", {}).get("best")
        if peak and "dygraph@1" in r:
            floor_ms = res["conv_linear_gflop_per_item"] / peak * 1e3
            res["fp32_floor_ms"] = round(floor_ms, 2)
            res["fp32_floor_ratio_vs_dygraph"] = round(floor_ms / r["dygraph@1"]["p50_ms"], 3)
            goal.append(f"{label}: fp32 floor: {res['conv_linear_gflop_per_item']:.2f} GFLOP of conv/linear per item "
                        f"at this core's best GEMM rate ({peak:.0f} GFLOPS) = {floor_ms:.2f} ms = "
                        f"{res['fp32_floor_ratio_vs_dygraph']:.2f}x the dygraph p50 at batch 1")
    print("\n" + "\n".join(goal))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
