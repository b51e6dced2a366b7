"""The one training engine for every model family.

``Trainer(cfg, task).fit()`` runs: seeded data order (a per-epoch permutation, sharded across ranks),
gradient accumulation, evaluation each epoch or every N steps, best-checkpoint selection on
``task.best_metric``, early stopping, atomic checkpoints (model, optimizers, schedulers, RNG, position in
the epoch) and exact resume, a non-finite-loss guard, a non-finite-weights guard (checked before every
evaluation and save: training stops with :class:`NonFiniteWeightsError`, the last good checkpoint kept), no
evaluation with a non-finite metric chosen as the best, a tqdm progress bar with samples/s and ETA, a
JSON-lines metrics log and a PNG of the curves. The output folder is locked while a run writes it
(``engine/runlock.py``); checkpoints record the task's preprocessing fingerprint (``trainer.json``:
``preprocessing``) and loading one with other preprocessing is an error. Ctrl-C or SIGTERM stops at the next
optimizer step, writes ``checkpoints/last`` and raises :class:`TrainingInterrupted` (a second one stops at
once).
Under ``python -m paddle.distributed.launch`` it wraps the model in ``paddle.DataParallel``, every rank reads
its own shard, evaluation outputs are gathered across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import time

import numpy as np
import paddle

from ..config import ConfigError, dump_config
from ..fileio import write_json_atomic
from ..runtime import check_precision, default_eval_engine, setup_runtime, world
from .checkpoint import check_preprocessing, load_checkpoint, load_model_weights, resume_path, save_checkpoint
from .checkpoint_average import save_step_checkpoint
from .fast_embedding import use_fast_embedding_grad
from .fast_linear import use_fast_linear_grad
from .fitstate import (  # noqa: F401  (the errors: re-exported)
    FitState,
    NonFiniteLossError,
    NonFiniteWeightsError,
    guard_weights,
    progress_bar,
    selectable,
    weights_digest,
)
from .interrupt import StopRequest
from .loader import Loader, to_tensors
from .runlock import OutputLock
from .runlog import MetricsLog
from .signals import restore_handlers

log = logging.getLogger("paddle_models")


BF16_TRAINING_NOTE = (
    "Global.precision: bf16: this run TRAINS IN FP32 and evaluates, exports and serves in bfloat16. Paddle 3.3.1 "
    "has no bfloat16 training on CPU: paddle.amp.auto_cast is a no-op there ('amp_guard can only be enabled on "
    "CUDAPlace, XPUPlace, and CustomPlace'), and its dygraph CPU kernels for matmul, conv2d and their gradients "
    "are registered for fp32 only (bfloat16 ones exist for oneDNN-layout tensors, which dygraph does not make)")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``fit()``; the message says at which step and how to resume. ``signum`` is the
    signal that stopped it (the tool's exit code is 128 + it)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def check_output_dir(path: str) -> None:
    """``Global.output_dir`` must be a folder or creatable as one: a ConfigError naming the key when it, or the
    nearest of its parents that exists, is a file."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = ("exists and is not a folder" if probe == os.path.abspath(path)
                else f"cannot be created: {probe} is a file")
        raise ConfigError(f"Global.output_dir: {path} {what}; choose a folder")


def _concat_outputs(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not chunks:
        return {}
    return {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}


# ---- the engine ------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg, task, model=None):
        self.cfg, self.task = cfg, task
        self.global_cfg = cfg["Global"]
        setup_runtime(cfg)
        self.rank, self.world_size = world()
        self.precision = check_precision(cfg)
        self.is_main = self.rank == 0
        self.output_dir = self.global_cfg["output_dir"]
        check_output_dir(self.output_dir)
        self.ckpt_dir = os.path.join(self.output_dir, "checkpoints")
        self._model = model
        self.nonfinite_skipped = 0
        self._metrics = MetricsLog(self.output_dir)
        self._preprocessing: dict | None = None
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
    def predict(self, model, split: str, progress: bool = False) -> dict[str, np.ndarray]:
        dataset = self.task.dataset(split)
        loader = Loader(dataset, self.task.collate_fn(split), self.global_cfg["eval_batch_size"],
                        self.global_cfg["num_workers"])
        if loader.iterable:
            if hasattr(dataset, "set_shard"):
                dataset.set_shard(self.rank, self.world_size)
            batches, total = loader.batches(), None
        else:
            indices = np.arange(len(dataset))
            if self.world_size > 1:
                indices = indices[self.rank::self.world_size]
            batches, total = loader.batches(indices), loader.num_batches(len(indices))
        model.eval()
        restore_handlers()  # the imports of building the model (paddlenlp) may have replaced SIGTERM's handler
        chunks = []
        bar = progress_bar(total, f"eval {split}", progress and self.is_main)
        for batch in batches:
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
            if self.global_cfg["checkpoint"]:
                check_preprocessing(self.global_cfg["checkpoint"], self._preprocessing)
                load_model_weights(model, self.global_cfg["checkpoint"])
            if engine == "inference":
                model, extra = self._exported(model)
        outputs = self.predict(model, split, progress=self.global_cfg["progress"])
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

    def eval_engine(self, split: str | None = None) -> str:
        """``Global.eval_engine`` resolved: ``auto`` is the CPU plan's engine (``runtime.cpu_plan``: the
        exported graph on Paddle Inference, measured faster on AMD and Intel) for a task that evaluates with
        one call of its model in one process on CPU, on a ``split`` of at least
        ``Global.eval_engine_min_items`` items (the export must pay for itself), else dygraph.
        ``Global.precision: bf16`` evaluates on the exported graph (Paddle Inference + oneDNN bf16)."""
        engine = str(self.global_cfg["eval_engine"])
        if engine not in ("auto", "dygraph", "inference"):
            raise ValueError(f"Global.eval_engine: {engine!r} is not one of auto, dygraph, inference")
        if engine == "auto":
            usable = self.task.eval_on_export and self.world_size == 1 and paddle.get_device() == "cpu"
            engine = default_eval_engine() if usable else "dygraph"
            if self.precision == "bf16" and usable:
                engine = "inference"
            elif engine == "inference" and split is not None:
                ds = self.task.dataset(split)
                small = hasattr(ds, "__len__") and len(ds) < int(self.global_cfg["eval_engine_min_items"])
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
        threads = int(self.global_cfg["num_threads"])
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
            if self.is_main:  # every split's records, before any file of the run is written
                self.task.check_data(("train", "val"))
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
        if self.global_cfg["visualdl"]:
            try:
                from visualdl import LogWriter

                self._vdl = self._metrics.vdl = LogWriter(os.path.join(self.output_dir, "vdl"))
            except ImportError:
                log.warning("Global.visualdl is set but visualdl is not installed; logging to metrics.jsonl only")

    def _build_train_model(self):
        model = self._model or self.task.build_model()
        if self.global_cfg["fast_linear_grad"] and paddle.get_device() == "cpu":
            use_fast_linear_grad(model)
        if self.global_cfg["fast_embedding_grad"] and paddle.get_device() == "cpu":
            use_fast_embedding_grad(model)
        return model

    def _plan_data(self):
        """(loader, batch sampler or None for a stream, optimizer steps per epoch or None, total steps)."""
        global_cfg, task = self.global_cfg, self.task
        train_ds = task.dataset("train")
        loader = Loader(train_ds, task.collate_fn("train"), global_cfg["batch_size"], global_cfg["num_workers"])
        sampler = None
        if loader.iterable:
            if hasattr(train_ds, "set_shard"):
                train_ds.set_shard(self.rank, self.world_size)
            n_batches = getattr(train_ds, "num_batches", lambda bs: None)(global_cfg["batch_size"])
        else:
            sampler = task.batch_sampler("train", train_ds, int(global_cfg["batch_size"]), seed=int(global_cfg["seed"]),
                                         shuffle=True, rank=self.rank, world_size=self.world_size)
            n_batches = len(sampler)
        accum = max(1, int(global_cfg["accum_steps"]))
        steps_per_epoch = int(math.ceil(n_batches / accum)) if n_batches else None
        total_steps = (steps_per_epoch or 1000) * int(global_cfg["epochs"])
        max_steps = int(global_cfg["max_steps"])
        if max_steps > 0:
            total_steps = min(total_steps, max_steps) if steps_per_epoch else max_steps
        self._train_ds = train_ds
        return loader, sampler, steps_per_epoch, total_steps

    def _restore_or_start(self):
        """Resume from ``checkpoints/last`` (``Global.resume``), or start from ``Global.checkpoint``'s weights
        or from scratch (a fresh run's metrics log starts empty)."""
        fit, global_cfg = self._fit, self.global_cfg
        resumed = False
        if global_cfg["resume"]:
            src = resume_path(fit.last_path(self.ckpt_dir))
            if src:
                check_preprocessing(src, self._preprocessing)
                fit.state.update(load_checkpoint(src, fit.model, fit.optimizers, fit.schedulers))
                resumed = True
                log.info("resumed from %s at epoch %d, batch %d, step %d", src, fit.state["epoch"],
                         fit.state["batch_in_epoch"], fit.state["step"])
            else:
                log.warning("Global.resume: no checkpoint at %s; starting from scratch", fit.last_path(self.ckpt_dir))
        elif global_cfg["checkpoint"]:
            check_preprocessing(global_cfg["checkpoint"], self._preprocessing)
            load_model_weights(fit.model, global_cfg["checkpoint"])
        if self.is_main:  # a resumed log continues from the checkpoint's step, a fresh one starts empty
            self._metrics.keep_until(fit.state["step"]) if resumed else self._metrics.reset()
        # find_unused_parameters: ERNIE-M's pooler (and ablated branches) take no part in the loss
        fit.train_model = (paddle.DataParallel(fit.model, find_unused_parameters=True) if self.world_size > 1
                           else fit.model)
        fit.bar = progress_bar(fit.total_steps, "train", global_cfg["progress"] and self.is_main,
                               initial=fit.state["step"])

    def _save(self, which: str):
        """Write ``checkpoints/<which>``; with ``Global.keep_last_checkpoints`` > 0 each ``last`` is also kept
        as ``checkpoints/step_<step>`` (weights only), the newest N of them."""
        fit = self._fit
        state = {**fit.trainer_state(), "preprocessing": self._preprocessing}
        save_checkpoint(os.path.join(self.ckpt_dir, which), fit.model, fit.optimizers, fit.schedulers, state)
        keep = self.global_cfg["keep_last_checkpoints"]
        if which == "last" and keep > 0:
            save_step_checkpoint(self.ckpt_dir, fit.model, state, keep)

    def _guard_weights(self) -> None:
        """Before evaluating or saving: stop (:class:`NonFiniteWeightsError`) when a weight is not finite."""
        fit = self._fit
        guard_weights(fit.model, fit.state["step"], fit.last_path(self.ckpt_dir), self.cfg["Optimizer"]["lr"])

    def _evaluate_and_checkpoint(self) -> bool:
        """Validate, log, keep the best checkpoint and the last one; True when early stopping says stop."""
        fit, task = self._fit, self.task
        self._guard_weights()
        fit.last_eval_step = fit.state["step"]
        metrics = self.evaluate("val", model=fit.model, write_artifacts=False)
        fit.model.train()
        value = metrics.get(task.best_metric)
        record = {"type": "eval", "step": fit.state["step"], "epoch": fit.state["epoch"],
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("seconds", "samples")},
               "eval_seconds": metrics.get("seconds"), "eval_samples": metrics.get("samples")}
        fit.state["history"].append(record)
        self._log(record)
        if selectable(record) and self._better(value, fit.state["best"]):
            fit.state["best"], fit.state["best_metrics"], fit.state["bad_evals"] = value, record, 0
            if self.is_main:
                self._save("best")
        else:
            fit.state["bad_evals"] += 1
        if self.is_main:
            self._save("last")
        self._barrier()
        patience = int(self.global_cfg["early_stopping_patience"] or 0)
        if patience > 0 and fit.state["bad_evals"] >= patience:
            fit.stop_reason = "early_stopping"
            return True
        return False

    def _optimizer_step(self):
        fit = self._fit
        for opt in fit.optimizers:
            opt.step()
            opt.clear_grad()
        for s in fit.schedulers:
            s.step()
        fit.state["step"] += 1
        fit.bar.update(1)
        if self._stop.requested:
            self._interrupted()

    def _interrupted(self):
        """Save ``checkpoints/last`` at this step boundary (finite weights only) and raise
        :class:`TrainingInterrupted` with the signal that asked."""
        fit = self._fit
        fit.bar.close()
        self._guard_weights()
        where = "no checkpoint written"
        if self.is_main:
            self._save("last")
            where = f"checkpoint {fit.last_path(self.ckpt_dir)}"
        raise TrainingInterrupted(f"interrupted at step {fit.state['step']} ({where}); resume with --resume "
                                  f"(or -o Global.resume=true) and the same Global.output_dir",
                                  signum=self._stop.signum or signal.SIGINT)

    def _epoch_batches(self, loader, sampler, epoch: int):
        skip = self._fit.state["batch_in_epoch"]
        if sampler is None:
            if hasattr(self._train_ds, "set_epoch"):
                self._train_ds.set_epoch(epoch)
            return loader.batches(skip=skip)
        return loader.batches(index_batches=sampler.batches(epoch), skip=skip)

    def _nonfinite(self, loss_value: float, epoch: int) -> None:
        """Skip the step (``Global.on_nonfinite: skip``) or stop with an error naming where it happened."""
        fit = self._fit
        if self.global_cfg["on_nonfinite"] == "skip":
            self.nonfinite_skipped += 1
            for opt in fit.optimizers:
                opt.clear_grad()
            log.warning("non-finite loss (%s) at epoch %d, batch %d: step skipped (%d so far)",
                        loss_value, epoch, fit.state["batch_in_epoch"] - 1, self.nonfinite_skipped)
            return
        last = fit.last_path(self.ckpt_dir)
        raise NonFiniteLossError(
            f"non-finite loss ({loss_value}) at epoch {epoch}, batch {fit.state['batch_in_epoch'] - 1}, "
            f"step {fit.state['step']}: training stopped; the last good checkpoint is kept at "
            f"{last if os.path.isdir(last) else '(none written yet)'}. "
            f"Lower Optimizer.lr, check the data, or set Global.on_nonfinite=skip.")

    def _log_train(self, loss_value: float, extra: dict, epoch: int):
        fit = self._fit
        dt = max(time.time() - fit.t_window, 1e-9)
        record = {"type": "train", "step": fit.state["step"], "epoch": epoch, "loss": loss_value,
               "lr": fit.optimizers[0].get_lr() if fit.optimizers else 0.0, "samples_per_s": fit.n_window / dt,
               **(extra or {})}
        self._log(record)
        fit.bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{fit.n_window / dt:.1f}")
        fit.t_window, fit.n_window = time.time(), 0

    def _train_epoch(self, loader, sampler) -> bool:
        """One epoch from the saved position in it; True when training must stop (max_steps, early stop)."""
        fit, global_cfg, task = self._fit, self.global_cfg, self.task
        epoch = fit.state["epoch"]
        accum = max(1, int(global_cfg["accum_steps"]))
        eval_every, save_every = int(global_cfg["eval_every_steps"] or 0), int(global_cfg["save_every_steps"] or 0)
        max_steps = int(global_cfg["max_steps"] or 0)
        micro = 0
        for batch in self._epoch_batches(loader, sampler, epoch):
            n = task.batch_size_of(batch)
            loss, extra = task.forward_loss(fit.train_model, to_tensors(batch))
            loss_value = float(loss)
            fit.state["batch_in_epoch"] += 1
            if not math.isfinite(loss_value):
                self._nonfinite(loss_value, epoch)
                micro = 0
                continue
            (loss / accum if accum > 1 else loss).backward()
            micro += 1
            fit.state["samples"] += n * self.world_size
            fit.n_window += n * self.world_size
            if micro % accum != 0:
                continue
            micro = 0
            self._optimizer_step()
            if fit.state["step"] % max(1, int(global_cfg["log_every_steps"])) == 0:
                self._log_train(loss_value, extra, epoch)
            if eval_every and fit.state["step"] % eval_every == 0:
                if self._evaluate_and_checkpoint():
                    return True
            elif save_every and fit.state["step"] % save_every == 0:
                self._guard_weights()
                if self.is_main:
                    self._save("last")
            if max_steps and fit.state["step"] >= max_steps:
                fit.stop_reason = "max_steps"
                return True
        # the epoch ran to its end
        if micro:  # leftover accumulated micro-batches
            self._optimizer_step()
        fit.state["epoch"] += 1
        fit.state["batch_in_epoch"] = 0
        if fit.state["step"] != fit.last_eval_step:
            return self._evaluate_and_checkpoint()
        return False

    def _run_epochs(self, loader, sampler):
        fit = self._fit
        fit.model.train()
        fit.t_window, fit.n_window = time.time(), 0
        stop = False
        while fit.state["epoch"] < int(self.global_cfg["epochs"]) and not stop:
            stop = self._train_epoch(loader, sampler)
        if fit.state["step"] != fit.last_eval_step:  # stopped by max_steps between evaluations
            self._evaluate_and_checkpoint()
        fit.bar.close()

    def _finish(self, t_start: float) -> dict:
        """The run's summary: steps, time, best metrics and checkpoints, data counters; writes curves.png and
        result.json (rank 0)."""
        fit, task = self._fit, self.task
        state, model = fit.state, fit.model
        best_path, last_path = os.path.join(self.ckpt_dir, "best"), fit.last_path(self.ckpt_dir)
        result = {"output_dir": os.path.abspath(self.output_dir), "steps": state["step"],
                  "epochs_run": state["epoch"], "seconds": round(time.time() - t_start, 3),
                  "samples_seen": state["samples"], "nonfinite_skipped": self.nonfinite_skipped}
        best = state["best_metrics"] or (state["history"][-1] if state["history"] else {})
        result.update({k: v for k, v in best.items() if k not in ("type", "step", "epoch")})
        result["best_step"] = best.get("step")
        result["stop_reason"] = fit.stop_reason
        # what ran in which precision (bf16: eval / export / serving; Paddle 3.3.1 trains in fp32 on CPU)
        result["numeric_precision"] = {"train": "fp32", "eval": self.precision}
        # the budget ended the run while the last evaluation was still the best one so far
        result["still_improving"] = bool(fit.stop_reason != "early_stopping" and state["history"]
                                         and state["bad_evals"] == 0)
        if result["still_improving"]:
            log.warning("training stopped at its budget (%s) while validation was still improving (%s %s at the "
                        "last evaluation, step %s): more epochs may help (raise Global.epochs%s)",
                        "Global.max_steps" if fit.stop_reason == "max_steps" else "Global.epochs",
                        task.best_metric, best.get(task.best_metric), best.get("step"),
                        " or Global.max_steps" if fit.stop_reason == "max_steps" else "")
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
            write_json_atomic(os.path.join(self.output_dir, "result.json"), result, indent=1, default=float)
        self.model = model
        return result
