"""The one training engine for every model family.

``Trainer(cfg, task).fit()`` runs: seeded data order (a per-epoch permutation, sharded across ranks),
gradient accumulation, evaluation each epoch or every N steps, best-checkpoint selection on
``task.best_metric``, early stopping, atomic checkpoints (model, optimizers, schedulers, RNG, position in
the epoch) and exact resume, a non-finite-loss guard, a tqdm progress bar with samples/s and ETA, a
JSON-lines metrics log and a PNG of the curves. The output folder is locked while a run writes it
(``engine/runlock.py``); checkpoints record the task's preprocessing fingerprint (``trainer.json``:
``preprocessing``) and loading one with other preprocessing is an error. Ctrl-C stops at the next optimizer
step, writes ``checkpoints/last`` and raises :class:`TrainingInterrupted` (a second Ctrl-C stops at once). Under ``python -m paddle.distributed.launch`` it wraps
the model in ``paddle.DataParallel``, every rank reads its own shard, evaluation outputs are gathered
across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import paddle

from ..config import dump_config
from ..runtime import check_precision, default_eval_engine, setup_runtime, world
from .checkpoint import (check_preprocessing, load_checkpoint, load_model_weights, resume_path,
                         save_checkpoint)
from .checkpoint_average import save_step_checkpoint
from .fast_embedding import use_fast_embedding_grad
from .fast_linear import use_fast_linear_grad
from .fitstate import FitState, progress_bar, weights_digest
from .loader import Loader, to_tensors
from .interrupt import StopRequest
from .runlock import OutputLock
from .runlog import MetricsLog

log = logging.getLogger("paddle_models")


BF16_TRAINING_NOTE = (
    "Global.precision: bf16: this run TRAINS IN FP32 and evaluates, exports and serves in bfloat16. Paddle 3.3.1 "
    "has no bfloat16 training on CPU: paddle.amp.auto_cast is a no-op there ('amp_guard can only be enabled on "
    "CUDAPlace, XPUPlace, and CustomPlace'), and its dygraph CPU kernels for matmul, conv2d and their gradients "
    "are registered for fp32 only (bfloat16 ones exist for oneDNN-layout tensors, which dygraph does not make)")


class NonFiniteLossError(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fit()``; the message says at which step and how to resume."""


def _concat_outputs(chunks: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}


# ---- the engine ------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg, task, model=None):
        self.cfg, self.task = cfg, task
        self.g = cfg["Global"]
        setup_runtime(cfg)
        self.rank, self.world_size = world()
        self.precision = check_precision(cfg)
        self.is_main = self.rank == 0
        self.output_dir = self.g["output_dir"]
        self.ckpt_dir = os.path.join(self.output_dir, "checkpoints")
        self._model = model
        self.nonfinite_skipped = 0
        self._metrics = MetricsLog(self.output_dir)
        self._preprocessing: Optional[dict] = None
        self._stop = StopRequest(enabled=self.world_size == 1)

    # -- helpers --
    def _barrier(self):
        if self.world_size > 1:
            paddle.distributed.barrier()

    def _prepare(self):
        if self.is_main:
            os.makedirs(self.output_dir, exist_ok=True)
            self.task.prepare(self.output_dir, is_main=True)
        self._barrier()
        if not self.is_main:
            self.task.prepare(self.output_dir, is_main=False)
        self._preprocessing = self.task.preprocessing_fingerprint()

    def _log(self, record: dict):
        if self.is_main:
            self._metrics.append(record)

    def _better(self, value, best) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best is None:
            return True
        return value > best if self.task.best_mode == "max" else value < best

    # -- evaluation --
    @paddle.no_grad()
    def predict(self, model, split: str, progress: bool = False) -> Dict[str, np.ndarray]:
        ds = self.task.dataset(split)
        loader = Loader(ds, self.task.collate_fn(split), self.g["eval_batch_size"], self.g["num_workers"])
        if loader.iterable:
            if hasattr(ds, "set_shard"):
                ds.set_shard(self.rank, self.world_size)
            it, total = loader.batches(), None
        else:
            idx = np.arange(len(ds))
            if self.world_size > 1:
                idx = idx[self.rank::self.world_size]
            it, total = loader.batches(idx), loader.num_batches(len(idx))
        model.eval()
        chunks = []
        bar = progress_bar(total, f"eval {split}", progress and self.is_main)
        for batch in it:
            chunks.append(self.task.predict_step(model, to_tensors(batch)))
            bar.update(1)
        bar.close()
        out = _concat_outputs(chunks)
        if self.world_size > 1:
            gathered = []
            paddle.distributed.all_gather_object(gathered, out)
            out = _concat_outputs([o for o in gathered if o])
        return out

    def evaluate(self, split: str = "val", model=None, write_artifacts: bool = True) -> dict:
        """Metrics of ``model`` (or the model with ``Global.checkpoint`` loaded) on ``split``. Without a
        ``model`` the output folder is locked while ``eval_<split>/`` is written."""
        if model is None and write_artifacts and self.is_main:
            with OutputLock(self.output_dir, what=f"eval {split}"):
                return self._evaluate(split, model, write_artifacts)
        return self._evaluate(split, model, write_artifacts)

    def _evaluate(self, split: str, model, write_artifacts: bool) -> dict:
        t0 = time.time()
        extra = {}
        if model is None:  # a given model (the validation while training) runs as it is: dygraph, fp32
            self._prepare()
            engine = self.eval_engine(split)
            model = self._model or self.task.build_model()
            if self.g.get("checkpoint"):
                check_preprocessing(self.g["checkpoint"], self._preprocessing)
                load_model_weights(model, self.g["checkpoint"])
            if engine == "inference":
                model, extra = self._exported(model)
        outputs = self.predict(model, split, progress=self.g.get("progress", True))
        metrics = self.task.compute_metrics(outputs)
        artifacts = {}
        if write_artifacts and self.is_main:
            out_dir = os.path.join(self.output_dir, f"eval_{split}")
            os.makedirs(out_dir, exist_ok=True)
            artifacts = self.task.write_eval_artifacts(outputs, metrics, out_dir, split) or {}
        n = len(next(iter(outputs.values()))) if outputs else 0
        summary = self.task.run_summary()
        if summary:
            artifacts = {**artifacts, "data": summary}
        return {**metrics, "split": split, "samples": n, "seconds": round(time.time() - t0, 3), **extra, **artifacts}

    def eval_engine(self, split: Optional[str] = None) -> str:
        """``Global.eval_engine`` resolved: ``auto`` is the CPU plan's engine (``runtime.cpu_plan``: the
        exported graph on Paddle Inference, measured faster on AMD and Intel) for a task that evaluates with
        one call of its model in one process on CPU, on a ``split`` of at least
        ``Global.eval_engine_min_items`` items (the export must pay for itself), else dygraph.
        ``Global.precision: bf16`` evaluates on the exported graph (Paddle Inference + oneDNN bf16)."""
        engine = str(self.g.get("eval_engine", "auto"))
        if engine not in ("auto", "dygraph", "inference"):
            raise ValueError(f"Global.eval_engine: {engine!r} is not one of auto, dygraph, inference")
        if engine == "auto":
            usable = self.task.eval_on_export and self.world_size == 1 and paddle.get_device() == "cpu"
            engine = default_eval_engine() if usable else "dygraph"
            if self.precision == "bf16" and usable:
                engine = "inference"
            elif engine == "inference" and split is not None:
                ds = self.task.dataset(split)
                small = hasattr(ds, "__len__") and len(ds) < int(self.g.get("eval_engine_min_items", 0))
                engine = "dygraph" if small else engine
        if self.precision == "bf16" and engine != "inference":
            raise ValueError(f"Global.precision: bf16 evaluates on the exported graph (Paddle Inference + oneDNN "
                             f"bfloat16), but this run evaluates in {engine}: Paddle 3.3.1 has no bfloat16 dygraph "
                             f"kernels on CPU. Use Global.eval_engine: auto or inference, one process, a task that "
                             f"evaluates with one call of its model, or Global.precision: fp32")
        return engine

    def _exported(self, model):
        """``model`` exported (parity-checked) to <output_dir>/export_eval and wrapped for predict_step."""
        from .export import export_model
        from .predictor import Predictor, PredictorModule

        if not self.task.eval_on_export:
            raise ValueError(f"Global.eval_engine=inference: the {self.task.family} task evaluates with more than "
                             f"one call of its model (decoding, retrieval); use eval_engine=dygraph")
        if self.world_size > 1:
            raise ValueError("Global.eval_engine=inference runs in one process; launch tools/eval.py without "
                             "paddle.distributed.launch")
        threads = int(self.g.get("num_threads") or 0)
        out = os.path.join(self.output_dir, "export_eval")
        t = time.time()
        res = export_model(self.cfg, out, task=self.task, model=model, threads=threads, check_onednn=False)
        onednn = os.environ.get("PADDLE_MODELS_ONEDNN", "auto")
        if self.precision == "bf16" and onednn == "off":
            raise ValueError("Global.precision: bf16 runs on oneDNN, but PADDLE_MODELS_ONEDNN=off")
        pred = Predictor(out, threads=threads, onednn=onednn, precision=self.precision)
        if pred.precision != self.precision:
            raise RuntimeError(f"Global.precision: {self.precision}: the exported graph runs in {pred.precision} "
                               f"({pred.onednn_note}); not evaluating in another precision than asked")
        log.info("eval on the exported graph %s (parity %.1e, oneDNN %s, %s%s)", out, res["parity_max_rel_err"],
                 pred.onednn, pred.precision, f": {pred.onednn_note}" if pred.onednn_note else "")
        return PredictorModule(pred), {"eval_engine": "inference", "export_dir": out, "onednn": pred.onednn,
                                       "numeric_precision": pred.precision,
                                       "export_seconds": round(time.time() - t, 3),
                                       "parity_max_rel_err": res["parity_max_rel_err"]}

    # -- training: fit() runs these steps in order --
    def fit(self) -> dict:
        """Train ``Global.epochs`` epochs (or ``Global.max_steps`` steps), evaluating and checkpointing as
        configured; return the run's summary (also written to ``<output_dir>/result.json``)."""
        t_start = time.time()
        if self.precision == "bf16":
            log.warning(BF16_TRAINING_NOTE)
        lock = OutputLock(self.output_dir, what="training").acquire() if self.is_main else None
        try:
            self._prepare()
            self._open_run_files()
            model = self._build_train_model()
            loader, sampler, steps_per_epoch, total_steps = self._plan_data()
            optimizers, schedulers = self.task.build_optimizers(model, total_steps)
            self._fit = FitState(model, optimizers, schedulers, total_steps)
            self._restore_or_start()
            with self._stop:
                self._run_epochs(loader, sampler)
            return self._finish(t_start)
        finally:
            if lock is not None:
                lock.release()

    def _open_run_files(self):
        """Checkpoint folder, the config beside the run, and the optional VisualDL writer (rank 0)."""
        self._vdl = self._metrics.vdl = None
        if not self.is_main:
            return
        os.makedirs(self.ckpt_dir, exist_ok=True)
        dump_config(self.cfg, os.path.join(self.output_dir, "config.yaml"))
        if self.g.get("visualdl"):
            try:
                from visualdl import LogWriter

                self._vdl = self._metrics.vdl = LogWriter(os.path.join(self.output_dir, "vdl"))
            except ImportError:
                log.warning("Global.visualdl is set but visualdl is not installed; logging to metrics.jsonl only")

    def _build_train_model(self):
        model = self._model or self.task.build_model()
        if self.g.get("fast_linear_grad", True) and paddle.get_device() == "cpu":
            use_fast_linear_grad(model)
        if self.g.get("fast_embedding_grad", True) and paddle.get_device() == "cpu":
            use_fast_embedding_grad(model)
        return model

    def _plan_data(self):
        """(loader, batch sampler or None for a stream, optimizer steps per epoch or None, total steps)."""
        g, task = self.g, self.task
        train_ds = task.dataset("train")
        loader = Loader(train_ds, task.collate_fn("train"), g["batch_size"], g["num_workers"])
        sampler = None
        if loader.iterable:
            if hasattr(train_ds, "set_shard"):
                train_ds.set_shard(self.rank, self.world_size)
            n_batches = getattr(train_ds, "num_batches", lambda bs: None)(g["batch_size"])
        else:
            sampler = task.batch_sampler("train", train_ds, int(g["batch_size"]), seed=int(g["seed"]),
                                         shuffle=True, rank=self.rank, world_size=self.world_size)
            n_batches = len(sampler)
        accum = max(1, int(g["accum_steps"]))
        steps_per_epoch = int(math.ceil(n_batches / accum)) if n_batches else None
        total_steps = (steps_per_epoch or 1000) * int(g["epochs"])
        if g["max_steps"] > 0:
            total_steps = min(total_steps, int(g["max_steps"])) if steps_per_epoch else int(g["max_steps"])
        self._train_ds = train_ds
        return loader, sampler, steps_per_epoch, total_steps

    def _restore_or_start(self):
        """Resume from ``checkpoints/last`` (``Global.resume``), or start from ``Global.checkpoint``'s weights
        or from scratch (a fresh run's metrics log starts empty)."""
        f, g = self._fit, self.g
        resumed = False
        if g.get("resume"):
            src = resume_path(f.last_path(self.ckpt_dir))
            if src:
                check_preprocessing(src, self._preprocessing)
                f.state.update(load_checkpoint(src, f.model, f.optimizers, f.schedulers))
                resumed = True
                log.info("resumed from %s at epoch %d, batch %d, step %d", src, f.state["epoch"],
                         f.state["batch_in_epoch"], f.state["step"])
            else:
                log.warning("Global.resume: no checkpoint at %s; starting from scratch", f.last_path(self.ckpt_dir))
        elif g.get("checkpoint"):
            check_preprocessing(g["checkpoint"], self._preprocessing)
            load_model_weights(f.model, g["checkpoint"])
        if self.is_main:  # a resumed log continues from the checkpoint's step, a fresh one starts empty
            self._metrics.keep_until(f.state["step"]) if resumed else self._metrics.reset()
        # find_unused_parameters: ERNIE-M's pooler (and ablated branches) take no part in the loss
        f.train_model = paddle.DataParallel(f.model, find_unused_parameters=True) if self.world_size > 1 else f.model
        f.bar = progress_bar(f.total_steps, "train", g.get("progress", True) and self.is_main, initial=f.state["step"])

    def _save(self, which: str):
        """Write ``checkpoints/<which>``; with ``Global.keep_last_checkpoints`` > 0 each ``last`` is also kept
        as ``checkpoints/step_<step>`` (weights only), the newest N of them."""
        f = self._fit
        state = {**f.trainer_state(), "preprocessing": self._preprocessing}
        save_checkpoint(os.path.join(self.ckpt_dir, which), f.model, f.optimizers, f.schedulers, state)
        keep = int(self.g.get("keep_last_checkpoints") or 0)
        if which == "last" and keep > 0:
            save_step_checkpoint(self.ckpt_dir, f.model, state, keep)

    def _evaluate_and_checkpoint(self) -> bool:
        """Validate, log, keep the best checkpoint and the last one; True when early stopping says stop."""
        f, task = self._fit, self.task
        f.last_eval_step = f.state["step"]
        metrics = self.evaluate("val", model=f.model, write_artifacts=False)
        f.model.train()
        value = metrics.get(task.best_metric)
        rec = {"type": "eval", "step": f.state["step"], "epoch": f.state["epoch"],
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("seconds", "samples")},
               "eval_seconds": metrics.get("seconds"), "eval_samples": metrics.get("samples")}
        f.state["history"].append(rec)
        self._log(rec)
        if self._better(value, f.state["best"]):
            f.state["best"], f.state["best_metrics"], f.state["bad_evals"] = value, rec, 0
            if self.is_main:
                self._save("best")
        else:
            f.state["bad_evals"] += 1
        if self.is_main:
            self._save("last")
        self._barrier()
        patience = int(self.g["early_stopping_patience"] or 0)
        if patience > 0 and f.state["bad_evals"] >= patience:
            f.stop_reason = "early_stopping"
            return True
        return False

    def _optimizer_step(self):
        f = self._fit
        for opt in f.optimizers:
            opt.step()
            opt.clear_grad()
        for s in f.schedulers:
            s.step()
        f.state["step"] += 1
        f.bar.update(1)
        if self._stop.requested:
            self._interrupted()

    def _interrupted(self):
        """Save ``checkpoints/last`` at this step boundary and raise :class:`TrainingInterrupted`."""
        f = self._fit
        f.bar.close()
        where = "no checkpoint written"
        if self.is_main:
            self._save("last")
            where = f"checkpoint {f.last_path(self.ckpt_dir)}"
        raise TrainingInterrupted(f"interrupted at step {f.state['step']} ({where}); resume with --resume "
                                  f"(or -o Global.resume=true) and the same Global.output_dir")

    def _epoch_batches(self, loader, sampler, epoch: int):
        skip = self._fit.state["batch_in_epoch"]
        if sampler is None:
            if hasattr(self._train_ds, "set_epoch"):
                self._train_ds.set_epoch(epoch)
            return loader.batches(skip=skip)
        return loader.batches(index_batches=sampler.batches(epoch), skip=skip)

    def _nonfinite(self, loss_value: float, epoch: int) -> None:
        """Skip the step (``Global.on_nonfinite: skip``) or stop with an error naming where it happened."""
        f = self._fit
        if self.g.get("on_nonfinite", "stop") == "skip":
            self.nonfinite_skipped += 1
            for opt in f.optimizers:
                opt.clear_grad()
            log.warning("non-finite loss (%s) at epoch %d, batch %d: step skipped (%d so far)",
                        loss_value, epoch, f.state["batch_in_epoch"] - 1, self.nonfinite_skipped)
            return
        last = f.last_path(self.ckpt_dir)
        raise NonFiniteLossError(
            f"non-finite loss ({loss_value}) at epoch {epoch}, batch {f.state['batch_in_epoch'] - 1}, "
            f"step {f.state['step']}: training stopped; the last good checkpoint is kept at "
            f"{last if os.path.isdir(last) else '(none written yet)'}. "
            f"Lower Optimizer.lr, check the data, or set Global.on_nonfinite=skip.")

    def _log_train(self, loss_value: float, extra: dict, epoch: int):
        f = self._fit
        dt = max(time.time() - f.t_window, 1e-9)
        rec = {"type": "train", "step": f.state["step"], "epoch": epoch, "loss": loss_value,
               "lr": f.optimizers[0].get_lr() if f.optimizers else 0.0, "samples_per_s": f.n_window / dt,
               **(extra or {})}
        self._log(rec)
        f.bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{f.n_window / dt:.1f}")
        f.t_window, f.n_window = time.time(), 0

    def _train_epoch(self, loader, sampler) -> bool:
        """One epoch from the saved position in it; True when training must stop (max_steps, early stop)."""
        f, g, task = self._fit, self.g, self.task
        epoch = f.state["epoch"]
        accum = max(1, int(g["accum_steps"]))
        eval_every, save_every = int(g["eval_every_steps"] or 0), int(g["save_every_steps"] or 0)
        max_steps = int(g["max_steps"] or 0)
        micro = 0
        for batch in self._epoch_batches(loader, sampler, epoch):
            n = task.batch_size_of(batch)
            loss, extra = task.forward_loss(f.train_model, to_tensors(batch))
            loss_value = float(loss)
            f.state["batch_in_epoch"] += 1
            if not math.isfinite(loss_value):
                self._nonfinite(loss_value, epoch)
                micro = 0
                continue
            (loss / accum if accum > 1 else loss).backward()
            micro += 1
            f.state["samples"] += n * self.world_size
            f.n_window += n * self.world_size
            if micro % accum != 0:
                continue
            micro = 0
            self._optimizer_step()
            if f.state["step"] % max(1, int(g["log_every_steps"])) == 0:
                self._log_train(loss_value, extra, epoch)
            if eval_every and f.state["step"] % eval_every == 0:
                if self._evaluate_and_checkpoint():
                    return True
            elif save_every and f.state["step"] % save_every == 0 and self.is_main:
                self._save("last")
            if max_steps and f.state["step"] >= max_steps:
                f.stop_reason = "max_steps"
                return True
        # the epoch ran to its end
        if micro:  # leftover accumulated micro-batches
            self._optimizer_step()
        f.state["epoch"] += 1
        f.state["batch_in_epoch"] = 0
        if f.state["step"] != f.last_eval_step:
            return self._evaluate_and_checkpoint()
        return False

    def _run_epochs(self, loader, sampler):
        f = self._fit
        f.model.train()
        f.t_window, f.n_window = time.time(), 0
        stop = False
        while f.state["epoch"] < int(self.g["epochs"]) and not stop:
            stop = self._train_epoch(loader, sampler)
        if f.state["step"] != f.last_eval_step:  # stopped by max_steps between evaluations
            self._evaluate_and_checkpoint()
        f.bar.close()

    def _finish(self, t_start: float) -> dict:
        """The run's summary: steps, time, best metrics and checkpoints, data counters; writes curves.png and
        result.json (rank 0)."""
        f, task = self._fit, self.task
        state, model = f.state, f.model
        best_path, last_path = os.path.join(self.ckpt_dir, "best"), f.last_path(self.ckpt_dir)
        result = {"output_dir": os.path.abspath(self.output_dir), "steps": state["step"],
                  "epochs_run": state["epoch"], "seconds": round(time.time() - t_start, 3),
                  "samples_seen": state["samples"], "nonfinite_skipped": self.nonfinite_skipped}
        best = state["best_metrics"] or (state["history"][-1] if state["history"] else {})
        result.update({k: v for k, v in best.items() if k not in ("type", "step", "epoch")})
        result["best_step"] = best.get("step")
        result["stop_reason"] = f.stop_reason
        # what ran in which precision (bf16: eval / export / serving; Paddle 3.3.1 trains in fp32 on CPU)
        result["numeric_precision"] = {"train": "fp32", "eval": self.precision}
        # the budget ended the run while the last evaluation was still the best one so far
        result["still_improving"] = bool(f.stop_reason != "early_stopping" and state["history"]
                                         and state["bad_evals"] == 0)
        if result["still_improving"]:
            log.warning("training stopped at its budget (%s) while validation was still improving (%s %s at the "
                        "last evaluation, step %s): more epochs may help (raise Global.epochs%s)",
                        "Global.max_steps" if f.stop_reason == "max_steps" else "Global.epochs",
                        task.best_metric, best.get(task.best_metric), best.get("step"),
                        " or Global.max_steps" if f.stop_reason == "max_steps" else "")
        result["best_checkpoint"] = os.path.abspath(os.path.join(best_path, "model.safetensors")) \
            if os.path.isdir(best_path) else None
        summary = task.run_summary()
        if summary:
            result["data"] = summary
        if self.world_size > 1:  # data parallel must leave every rank with the same weights
            digests = []
            paddle.distributed.all_gather_object(digests, weights_digest(model))
            result["rank_weight_digests"] = digests
            result["ranks_identical"] = len(set(digests)) == 1
            if not result["ranks_identical"]:
                log.error("data-parallel ranks ended with different weights: %s", digests)
        result["last_checkpoint"] = os.path.abspath(last_path) if os.path.isdir(last_path) else None
        if self.is_main:
            self._metrics.write_curves()
            result["metrics_log"] = os.path.abspath(os.path.join(self.output_dir, "metrics.jsonl"))
            with open(os.path.join(self.output_dir, "result.json"), "w") as fh:
                json.dump(result, fh, indent=1, default=float)
        self.model = model
        return result
