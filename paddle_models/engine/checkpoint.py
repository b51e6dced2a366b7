"""Atomic, verifiable checkpoints.

A checkpoint is a folder::

    model.pdparams        the model's state dict
    optimizer_<i>.pdopt   each optimizer's state
    scheduler_<i>.json    each LR scheduler's state
    trainer.json          epoch, step, best metric, early-stopping counter, RNG states (python, numpy, paddle)
    manifest.json         size and sha256 of every file above, written last

It is written into ``<name>.tmp`` and renamed into place only when complete; the previous good
checkpoint stays until then (as ``<name>.prev`` during the swap), so a crash never leaves a half-written
checkpoint under the real name. Loading checks the manifest: a truncated or corrupted file is a clear
error naming the file, and the ``.prev`` copy (if any) is named as the fallback.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
from typing import Optional

import numpy as np
import paddle


class CheckpointError(RuntimeError):
    pass


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "paddle": [s for s in paddle.get_rng_state()],
    }


def set_rng_state(state: dict):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


def _fsync_dir(path: str):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _param_names(model) -> dict:
    """Paddle's generated parameter name (``linear_3.w_0``) -> the structured name (``classifier1.weight``)."""
    return {p.name: n for n, p in model.named_parameters()}


def _rename_state(state: dict, mapping: dict) -> dict:
    """Rename optimizer-state keys ``<param name>_<accumulator>`` through ``mapping`` (longest prefix wins).

    Generated parameter names depend on how many layers a process built before, so optimizer states are
    stored under the structured names and mapped back to this process's names on load."""
    ordered = sorted(mapping, key=len, reverse=True)
    out = {}
    for k, v in state.items():
        new = k
        if isinstance(k, str):
            for old in ordered:
                if k == old or k.startswith(old + "_"):
                    new = mapping[old] + k[len(old):]
                    break
        out[new] = _rename_state(v, mapping) if isinstance(v, dict) else v
    return out


def save_checkpoint(path: str, model, optimizers=(), schedulers=(), trainer_state: Optional[dict] = None,
                    rng: bool = True) -> str:
    """Write a checkpoint folder atomically at ``path``; returns ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp, prev = path + ".tmp", path + ".prev"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    paddle.save(model.state_dict(), os.path.join(tmp, "model.pdparams"))
    for i, opt in enumerate(optimizers):
        paddle.save(_rename_state(opt.state_dict(), _param_names(model)), os.path.join(tmp, f"optimizer_{i}.pdopt"))
    for i, s in enumerate(schedulers):
        with open(os.path.join(tmp, f"scheduler_{i}.json"), "w") as f:
            json.dump({k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in s.state_dict().items()}, f)
    state = dict(trainer_state or {})
    with open(os.path.join(tmp, "trainer.json"), "w") as f:
        json.dump(state, f, indent=1, default=float)
    if rng:
        with open(os.path.join(tmp, "rng.pkl"), "wb") as f:
            pickle.dump(rng_state(), f)
    files = sorted(os.listdir(tmp))
    manifest = {n: {"bytes": os.path.getsize(os.path.join(tmp, n)), "sha256": file_sha256(os.path.join(tmp, n))}
                for n in files}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if os.path.exists(path):
        if os.path.exists(prev):
            shutil.rmtree(prev)
        os.replace(path, prev)
    os.replace(tmp, path)
    _fsync_dir(parent)
    if os.path.exists(prev):
        shutil.rmtree(prev)
    return path


def verify_checkpoint(path: str) -> dict:
    """Check every file against the manifest; return the manifest or raise CheckpointError."""
    fallback = f"; the previous good checkpoint is {path}.prev" if os.path.isdir(path + ".prev") else ""
    mpath = os.path.join(path, "manifest.json")
    if not os.path.isdir(path):
        raise CheckpointError(f"{path}: checkpoint folder not found")
    if not os.path.isfile(mpath):
        raise CheckpointError(f"{path}: incomplete checkpoint (no manifest.json: the write did not finish){fallback}")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{mpath}: unreadable manifest ({e}){fallback}") from None
    for name, meta in manifest.items():
        fp = os.path.join(path, name)
        if not os.path.isfile(fp):
            raise CheckpointError(f"{fp}: listed in the manifest but missing{fallback}")
        size = os.path.getsize(fp)
        if size != meta["bytes"]:
            raise CheckpointError(f"{fp}: truncated or changed ({size} bytes, manifest says {meta['bytes']}){fallback}")
        if file_sha256(fp) != meta["sha256"]:
            raise CheckpointError(f"{fp}: corrupted (sha256 differs from the manifest){fallback}")
    return manifest


def resume_path(path: str) -> Optional[str]:
    """The checkpoint to resume from: ``path`` if it verifies; else its ``.prev`` copy (left by a kill
    between the two renames of a save) with a warning; None when neither exists. A damaged checkpoint
    without a good ``.prev`` is an error."""
    import logging

    log = logging.getLogger("paddle_models")
    prev = path + ".prev"
    if os.path.isdir(path):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            if os.path.isdir(prev):
                verify_checkpoint(prev)
                log.warning("%s; resuming from the previous good checkpoint %s", e, prev)
                return prev
            raise
    if os.path.isdir(prev):
        verify_checkpoint(prev)
        log.warning("%s is missing (a save was interrupted); resuming from %s", path, prev)
        return prev
    return None


def load_checkpoint(path: str, model, optimizers=(), schedulers=(), restore_rng: bool = True) -> dict:
    """Verify and load a checkpoint folder into model/optimizers/schedulers; return the trainer state."""
    verify_checkpoint(path)
    load_model_weights(model, os.path.join(path, "model.pdparams"))
    for i, opt in enumerate(optimizers):
        fp = os.path.join(path, f"optimizer_{i}.pdopt")
        if not os.path.isfile(fp):
            raise CheckpointError(f"{fp}: missing (the checkpoint has fewer optimizers than this run)")
        back = {structured: generated for generated, structured in _param_names(model).items()}
        opt.set_state_dict(_rename_state(paddle.load(fp), back))
    for i, s in enumerate(schedulers):
        with open(os.path.join(path, f"scheduler_{i}.json")) as f:
            s.set_state_dict(json.load(f))
    with open(os.path.join(path, "trainer.json")) as f:
        state = json.load(f)
    rng_path = os.path.join(path, "rng.pkl")
    if restore_rng and os.path.isfile(rng_path):
        with open(rng_path, "rb") as f:
            set_rng_state(pickle.load(f))
    return state


def resolve_weights(path: str) -> str:
    """A checkpoint folder, or a .pdparams file -> the model weights file."""
    if os.path.isdir(path):
        verify_checkpoint(path)
        return os.path.join(path, "model.pdparams")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def load_model_weights(model, path: str, strict: bool = True):
    """Load a state dict into ``model``; any missing/unexpected/shape-mismatched key is an error (strict)."""
    path = resolve_weights(path)
    try:
        state = paddle.load(path, return_numpy=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(np.shape(state[k]))} vs {tuple(own[k].shape)}" for k in state
                  if k in own and tuple(np.shape(state[k])) != tuple(own[k].shape)]
    if strict and (missing or unexpected or mismatched):
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if items:
                parts.append(f"{len(items)} {title} ({', '.join(items[:5])}{', ...' if len(items) > 5 else ''})")
        raise CheckpointError(f"{path}: checkpoint does not fit this model's architecture: " + "; ".join(parts))
    model.set_state_dict({k: v for k, v in state.items() if k in own})
