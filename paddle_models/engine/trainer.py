"""The one training engine for every model family.

``Trainer(cfg, task).fit()`` runs: seeded data order (a per-epoch permutation, sharded across ranks),
gradient accumulation, evaluation each epoch or every N steps, best-checkpoint selection on
``task.best_metric``, early stopping, atomic checkpoints (model, optimizers, schedulers, RNG, position in
the epoch) and exact resume, a non-finite-loss guard, a tqdm progress bar with samples/s and ETA, a
JSON-lines metrics log and a PNG of the curves. Under ``python -m paddle.distributed.launch`` it wraps
the model in ``paddle.DataParallel``, every rank reads its own shard, evaluation outputs are gathered
across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import random
import shutil
import time
from typing import Dict, Iterator, List, Optional

import numpy as np
import paddle

from ..config import dump_config
from .checkpoint import load_checkpoint, load_model_weights, resume_path, save_checkpoint
from .fast_linear import use_fast_linear_grad

log = logging.getLogger("paddle_models")


class NonFiniteLossError(RuntimeError):
    pass


# ---- process / device setup ------------------------------------------------------------------
def world() -> tuple:
    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


def setup_runtime(cfg):
    """Device, CPU threads, seeds, and the distributed environment when launched with several ranks."""
    g = cfg["Global"]
    dev = g.get("device", "auto")
    if dev == "gpu" or (dev == "auto" and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        paddle.set_device("gpu")
    else:
        paddle.set_device("cpu")
    if paddle.get_device() == "cpu":
        on = bool(g.get("onednn", False))  # Paddle 3 reads FLAGS_use_onednn; FLAGS_use_mkldnn is its old name
        paddle.set_flags({"FLAGS_use_onednn": on, "FLAGS_use_mkldnn": on})
    threads = int(g.get("num_threads") or 0) or (os.cpu_count() or 1)
    rank, ws = world()
    if ws > 1 and paddle.get_device() == "cpu":
        threads = max(1, threads // ws)
    try:
        paddle.base.core.set_num_threads(threads)
    except AttributeError:  # pragma: no cover
        pass
    if ws > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    seed_everything(int(g["seed"]))


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


# ---- data ------------------------------------------------------------------------------------
def epoch_indices(n: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's sample order for an epoch: a seeded permutation, then every world_size-th index."""
    order = np.random.RandomState((seed * 1000003 + epoch) % (2 ** 32)).permutation(n) if shuffle else np.arange(n)
    if world_size > 1:
        per = int(math.ceil(n / world_size))
        order = np.concatenate([order, order[: per * world_size - n]])  # pad so every rank has as many batches
        order = order[rank::world_size]
    return order


_W_DATASET = None
_W_COLLATE = None


def _worker_init(dataset, collate):
    global _W_DATASET, _W_COLLATE
    _W_DATASET, _W_COLLATE = dataset, collate
    paddle.base.core.set_num_threads(1) if hasattr(paddle.base.core, "set_num_threads") else None


def _worker_batch(idx):
    items = [_W_DATASET[int(i)] for i in idx]
    return _W_COLLATE(items) if _W_COLLATE else items


def default_collate(items):
    if isinstance(items[0], dict):
        return {k: np.stack([np.asarray(it[k]) for it in items]) for k in items[0]}
    return np.stack([np.asarray(it) for it in items])


class Loader:
    """Batches of a map-style dataset in a given index order (optionally in worker processes), or of an
    iterable dataset. Collate functions return dicts of numpy arrays; strings stay numpy."""

    def __init__(self, dataset, collate, batch_size: int, num_workers: int = 0):
        self.dataset, self.collate = dataset, collate or default_collate
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.iterable = isinstance(dataset, paddle.io.IterableDataset) or not hasattr(dataset, "__getitem__")

    def num_batches(self, n_indices: int) -> int:
        return int(math.ceil(n_indices / self.batch_size))

    def batches(self, indices: Optional[np.ndarray] = None, skip: int = 0) -> Iterator:
        if self.iterable:
            yield from self._iter_batches(skip)
            return
        chunks = [indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)][skip:]
        if self.num_workers <= 0:
            for c in chunks:
                yield self.collate([self.dataset[int(i)] for i in c])
            return
        ctx = mp.get_context("fork")
        with ctx.Pool(self.num_workers, initializer=_worker_init, initargs=(self.dataset, self.collate)) as pool:
            yield from pool.imap(_worker_batch, chunks, chunksize=1)

    def _iter_batches(self, skip: int):
        buf, seen = [], 0
        for item in self.dataset:
            buf.append(item)
            if len(buf) == self.batch_size:
                if seen >= skip:
                    yield self.collate(buf)
                seen += 1
                buf = []
        if buf and seen >= skip:
            yield self.collate(buf)


def to_tensors(batch):
    """numpy arrays -> paddle Tensors (numeric dtypes only); everything else is passed through."""
    if isinstance(batch, dict):
        return {k: to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_tensors(v) for v in batch)
    if isinstance(batch, np.ndarray) and batch.dtype.kind in "biuf":
        return paddle.to_tensor(batch)
    return batch


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
        self.is_main = self.rank == 0
        self.output_dir = self.g["output_dir"]
        self.ckpt_dir = os.path.join(self.output_dir, "checkpoints")
        self._model = model
        self.nonfinite_skipped = 0

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

    def _log(self, record: dict):
        if not self.is_main:
            return
        record = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in record.items()}
        with open(os.path.join(self.output_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._vdl is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self._vdl.add_scalar(f"{record.get('type', 'train')}/{k}", v, record.get("step", 0))

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
        bar = _bar(total, f"eval {split}", progress and self.is_main)
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
        """Metrics of ``model`` (or the model with ``Global.checkpoint`` loaded) on ``split``."""
        t0 = time.time()
        engine = str(self.g.get("eval_engine", "dygraph"))
        if engine not in ("dygraph", "inference"):
            raise ValueError(f"Global.eval_engine: {engine!r} is not one of dygraph, inference")
        extra = {}
        if model is None:
            self._prepare()
            model = self._model or self.task.build_model()
            if self.g.get("checkpoint"):
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
        pred = Predictor(out, threads=threads, onednn=os.environ.get("PADDLE_MODELS_ONEDNN", "auto"))
        log.info("eval on the exported graph %s (parity %.1e, oneDNN %s%s)", out, res["parity_max_rel_err"],
                 pred.onednn, f": {pred.onednn_note}" if pred.onednn_note else "")
        return PredictorModule(pred), {"eval_engine": "inference", "export_dir": out, "onednn": pred.onednn,
                                       "export_seconds": round(time.time() - t, 3),
                                       "parity_max_rel_err": res["parity_max_rel_err"]}

    # -- training --
    def fit(self) -> dict:
        g, task = self.g, self.task
        t_start = time.time()
        self._prepare()
        self._vdl = None
        if self.is_main:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            dump_config(self.cfg, os.path.join(self.output_dir, "config.yaml"))
            if g.get("visualdl"):
                try:
                    from visualdl import LogWriter

                    self._vdl = LogWriter(os.path.join(self.output_dir, "vdl"))
                except ImportError:
                    log.warning("Global.visualdl is set but visualdl is not installed; logging to metrics.jsonl only")
        model = self._model or task.build_model()
        if g.get("fast_linear_grad", True) and paddle.get_device() == "cpu":
            use_fast_linear_grad(model)
        train_ds = task.dataset("train")
        loader = Loader(train_ds, task.collate_fn("train"), g["batch_size"], g["num_workers"])
        if loader.iterable:
            steps_per_epoch = None
            if hasattr(train_ds, "set_shard"):
                train_ds.set_shard(self.rank, self.world_size)
            n_batches = getattr(train_ds, "num_batches", lambda bs: None)(g["batch_size"])
        else:
            n_batches = loader.num_batches(len(epoch_indices(len(train_ds), 0, 0, False, self.rank, self.world_size)))
        accum = max(1, int(g["accum_steps"]))
        steps_per_epoch = int(math.ceil(n_batches / accum)) if n_batches else None
        total_steps = (steps_per_epoch or 1000) * int(g["epochs"])
        if g["max_steps"] > 0:
            total_steps = min(total_steps, int(g["max_steps"])) if steps_per_epoch else int(g["max_steps"])
        optimizers, schedulers = task.build_optimizers(model, total_steps)

        state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best": None, "best_metrics": None,
                 "bad_evals": 0, "history": [], "samples": 0}
        last_path = os.path.join(self.ckpt_dir, "last")
        best_path = os.path.join(self.ckpt_dir, "best")
        resumed = False
        if g.get("resume"):
            src = resume_path(last_path)
            if src:
                state.update(load_checkpoint(src, model, optimizers, schedulers))
                resumed = True
                log.info("resumed from %s at epoch %d, batch %d, step %d", src, state["epoch"],
                         state["batch_in_epoch"], state["step"])
            else:
                log.warning("Global.resume: no checkpoint at %s; starting from scratch", last_path)
        elif g.get("checkpoint"):
            load_model_weights(model, g["checkpoint"])
        if self.is_main and not resumed and os.path.exists(os.path.join(self.output_dir, "metrics.jsonl")):
            os.remove(os.path.join(self.output_dir, "metrics.jsonl"))

        # find_unused_parameters: ERNIE-M's pooler (and ablated branches) take no part in the loss
        train_model = paddle.DataParallel(model, find_unused_parameters=True) if self.world_size > 1 else model
        eval_every = int(g["eval_every_steps"] or 0)
        save_every = int(g["save_every_steps"] or 0)
        stop = False
        bar = _bar(total_steps, "train", g.get("progress", True) and self.is_main, initial=state["step"])

        def trainer_state():
            return {k: state[k] for k in ("epoch", "batch_in_epoch", "step", "best", "best_metrics", "bad_evals",
                                          "history", "samples")}

        def do_eval():
            metrics = self.evaluate("val", model=model, write_artifacts=False)
            model.train()
            value = metrics.get(task.best_metric)
            rec = {"type": "eval", "step": state["step"], "epoch": state["epoch"],
                   **{k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("seconds", "samples")},
                   "eval_seconds": metrics.get("seconds"), "eval_samples": metrics.get("samples")}
            state["history"].append(rec)
            self._log(rec)
            if self._better(value, state["best"]):
                state["best"], state["best_metrics"], state["bad_evals"] = value, rec, 0
                if self.is_main:
                    save_checkpoint(best_path, model, optimizers, schedulers, trainer_state())
            else:
                state["bad_evals"] += 1
            if self.is_main:
                save_checkpoint(last_path, model, optimizers, schedulers, trainer_state())
            self._barrier()
            patience = int(g["early_stopping_patience"] or 0)
            return patience > 0 and state["bad_evals"] >= patience

        def optimizer_step():
            for opt in optimizers:
                opt.step()
                opt.clear_grad()
            for s in schedulers:
                s.step()
            state["step"] += 1
            bar.update(1)

        model.train()
        t_window, n_window = time.time(), 0
        last_eval_step = -1
        max_steps = int(g["max_steps"] or 0)
        while state["epoch"] < int(g["epochs"]) and not stop:
            epoch = state["epoch"]
            if loader.iterable:
                if hasattr(train_ds, "set_epoch"):
                    train_ds.set_epoch(epoch)
                batches = loader.batches(skip=state["batch_in_epoch"])
            else:
                idx = epoch_indices(len(train_ds), int(g["seed"]), epoch, True, self.rank, self.world_size)
                batches = loader.batches(idx, skip=state["batch_in_epoch"])
            micro = 0
            for batch in batches:
                n = task.batch_size_of(batch)
                loss, extra = task.forward_loss(train_model, to_tensors(batch))
                loss_value = float(loss)
                state["batch_in_epoch"] += 1
                if not math.isfinite(loss_value):
                    if g.get("on_nonfinite", "stop") == "skip":
                        self.nonfinite_skipped += 1
                        for opt in optimizers:
                            opt.clear_grad()
                        micro = 0
                        log.warning("non-finite loss (%s) at epoch %d, batch %d: step skipped (%d so far)",
                                    loss_value, epoch, state["batch_in_epoch"] - 1, self.nonfinite_skipped)
                        continue
                    raise NonFiniteLossError(
                        f"non-finite loss ({loss_value}) at epoch {epoch}, batch {state['batch_in_epoch'] - 1}, "
                        f"step {state['step']}: training stopped; the last good checkpoint is kept at "
                        f"{last_path if os.path.isdir(last_path) else '(none written yet)'}. "
                        f"Lower Optimizer.lr, check the data, or set Global.on_nonfinite=skip.")
                (loss / accum if accum > 1 else loss).backward()
                micro += 1
                state["samples"] += n * self.world_size
                n_window += n * self.world_size
                if micro % accum != 0:
                    continue
                micro = 0
                optimizer_step()
                if state["step"] % max(1, int(g["log_every_steps"])) == 0:
                    dt = max(time.time() - t_window, 1e-9)
                    rec = {"type": "train", "step": state["step"], "epoch": epoch, "loss": loss_value,
                           "lr": optimizers[0].get_lr() if optimizers else 0.0, "samples_per_s": n_window / dt,
                           **(extra or {})}
                    self._log(rec)
                    bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{n_window / dt:.1f}")
                    t_window, n_window = time.time(), 0
                if eval_every and state["step"] % eval_every == 0:
                    last_eval_step = state["step"]
                    if do_eval():
                        stop = True
                        break
                elif save_every and state["step"] % save_every == 0 and self.is_main:
                    save_checkpoint(last_path, model, optimizers, schedulers, trainer_state())
                if max_steps and state["step"] >= max_steps:
                    stop = True
                    break
            else:  # the epoch ran to its end
                if micro:  # leftover accumulated micro-batches
                    optimizer_step()
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                if state["step"] != last_eval_step:
                    last_eval_step = state["step"]
                    if do_eval():
                        stop = True
        if state["step"] != last_eval_step:  # stopped by max_steps between evaluations
            do_eval()
        bar.close()
        result = {"output_dir": os.path.abspath(self.output_dir), "steps": state["step"],
                  "epochs_run": state["epoch"], "seconds": round(time.time() - t_start, 3),
                  "samples_seen": state["samples"], "nonfinite_skipped": self.nonfinite_skipped}
        best = state["best_metrics"] or (state["history"][-1] if state["history"] else {})
        result.update({k: v for k, v in best.items() if k not in ("type", "step", "epoch")})
        result["best_step"] = best.get("step")
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
            self._write_curves()
            result["metrics_log"] = os.path.abspath(os.path.join(self.output_dir, "metrics.jsonl"))
            with open(os.path.join(self.output_dir, "result.json"), "w") as f:
                json.dump(result, f, indent=1, default=float)
        self.model = model
        return result

    def _write_curves(self):
        try:
            from ..plots import plot_training_curves
        except ImportError:
            return
        src = os.path.join(self.output_dir, "metrics.jsonl")
        if os.path.isfile(src):
            try:
                plot_training_curves(src, os.path.join(self.output_dir, "curves.png"))
            except Exception as e:  # a plot must never fail a training run
                log.warning("could not draw curves.png: %s", e)


def weights_digest(model) -> str:
    """sha256 over every parameter and buffer, in state-dict order (bitwise identity check)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def _bar(total, desc, enabled, initial=0):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, initial=initial, unit="step", dynamic_ncols=True, leave=False)

    class _Null:
        def update(self, n=1):
            pass

        def set_postfix(self, **k):
            pass

        def close(self):
            pass

    return _Null()
