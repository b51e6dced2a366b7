"""The last N step checkpoints of a run, and checkpoint averaging.

With ``Global.keep_last_checkpoints: N`` (> 0) the Trainer keeps, beside ``checkpoints/best`` and
``checkpoints/last``, a copy of the weights each time it writes ``last`` (at every evaluation, and every
``Global.save_every_steps``) as ``checkpoints/step_<step>``: a checkpoint folder (``model.safetensors``,
``trainer.json``, ``manifest.json``; no optimizer or RNG state), written atomically like the others. Only the
newest N are kept; older ones, and any from beyond the current step (left by an abandoned run before a
resume), are removed.

``average_checkpoints`` averages the weights of several checkpoints (folders or ``.safetensors`` files) into
one, element-wise, accumulated in float64 and cast back to each tensor's dtype; tensors that are not floating
point must be equal in every input and are copied. The result is a ``.safetensors`` file or a checkpoint
folder, both usable as ``Global.checkpoint``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence

import numpy as np

from ..fileio import atomic_write
from .checkpoint import CheckpointError, read_weights, resolve_weights, save_checkpoint, trainer_state_of

log = logging.getLogger("paddle_models")

STEP_PREFIX = "step_"
_STEP_NAME = re.compile(r"^step_(\d+)$")


def step_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
    """``(step, folder)`` of every complete ``step_<N>`` checkpoint in ``ckpt_dir``, oldest first."""
    if not os.path.isdir(ckpt_dir):
        return []
    found = []
    for name in os.listdir(ckpt_dir):
        m = _STEP_NAME.match(name)
        path = os.path.join(ckpt_dir, name)
        if m and os.path.isfile(os.path.join(path, "manifest.json")):
            found.append((int(m.group(1)), path))
    return sorted(found)


def prune_step_checkpoints(ckpt_dir: str, keep: int, current_step: int | None = None) -> list[str]:
    """Remove step checkpoints beyond ``current_step`` and all but the newest ``keep``; returns the removed."""
    found = step_checkpoints(ckpt_dir)
    stale = [p for s, p in found if current_step is not None and s > current_step]
    kept = [p for s, p in found if current_step is None or s <= current_step]
    removed = stale + kept[: max(0, len(kept) - keep)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def save_step_checkpoint(ckpt_dir: str, model, trainer_state: dict, keep: int) -> str:
    """Write ``step_<step>`` (weights and trainer state) and prune to the newest ``keep``; returns its path."""
    step = int(trainer_state["step"])
    path = save_checkpoint(os.path.join(ckpt_dir, f"{STEP_PREFIX}{step}"), model, (), (), trainer_state, rng=False)
    prune_step_checkpoints(ckpt_dir, keep, current_step=step)
    return path


def last_step_checkpoints(run_dir: str, count: int) -> list[str]:
    """The newest ``count`` step checkpoints of the run in ``run_dir`` (``<run_dir>/checkpoints/step_<N>``)."""
    found = step_checkpoints(os.path.join(run_dir, "checkpoints"))
    if count <= 0:
        raise ValueError(f"--last {count}: the number of checkpoints to average must be at least 1")
    if len(found) < count:
        raise CheckpointError(f"{run_dir}/checkpoints: {len(found)} step checkpoints, fewer than the {count} asked "
                              f"for (train with Global.keep_last_checkpoints >= {count})")
    return [p for _, p in found[-count:]]


def _check_like(first: dict, state: dict, first_path: str, path: str) -> None:
    """Same tensor names, shapes and dtypes as the first input, or a CheckpointError naming the tensor."""
    missing, extra = sorted(set(first) - set(state)), sorted(set(state) - set(first))
    if missing or extra:
        raise CheckpointError(f"{path}: tensors differ from {first_path} (missing {missing[:5]}, extra {extra[:5]})")
    for k, v in state.items():
        if v.shape != first[k].shape or v.dtype != first[k].dtype:
            raise CheckpointError(f"{path}: tensor {k!r} is {v.dtype}{list(v.shape)} but {first[k].dtype}"
                                  f"{list(first[k].shape)} in {first_path}")


def average_state_dicts(paths: Sequence[str]) -> dict:
    """The element-wise mean of the weights files ``paths`` (read one at a time)."""
    first, sums = None, {}
    for path in paths:
        state = read_weights(path)
        if first is None:
            first = state
            sums = {k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v for k, v in state.items()}
            continue
        _check_like(first, state, paths[0], path)
        for k, v in state.items():
            if np.issubdtype(v.dtype, np.floating):
                sums[k] += v
            elif not np.array_equal(v, first[k]):
                raise CheckpointError(f"{path}: tensor {k!r} ({v.dtype}) differs from {paths[0]} and cannot be "
                                      f"averaged (not floating point)")
    return {k: (s / len(paths)).astype(first[k].dtype) if np.issubdtype(first[k].dtype, np.floating) else s
            for k, s in sums.items()}


def _common_fingerprint(inputs: Sequence[str]) -> dict | None:
    """The inputs' shared preprocessing fingerprint (``trainer.json``), or an error when two differ."""
    seen = None
    for path in inputs:
        fp = (trainer_state_of(path) or {}).get("preprocessing")
        if fp and seen and fp.get("sha256") != seen[1].get("sha256"):
            raise CheckpointError(f"{path}: trained with the {fp.get('kind')} {fp.get('path')}, but {seen[0]} with "
                                  f"{seen[1].get('path')}: only checkpoints of one vocabulary can be averaged")
        seen = seen or ((path, fp) if fp else None)
    return seen[1] if seen else None


def average_checkpoints(inputs: Sequence[str], out: str) -> dict:
    """Average the weights of ``inputs`` (checkpoint folders or weights files) into ``out``: a ``.safetensors``
    file, else a checkpoint folder. Returns what was written: ``output``, ``inputs``, ``count``, ``tensors``."""
    if not inputs:
        raise ValueError("average_checkpoints: no inputs")
    paths = [resolve_weights(p) for p in inputs]  # a folder is verified against its manifest
    fingerprint = _common_fingerprint(inputs)
    averaged = average_state_dicts(paths)
    steps = [(trainer_state_of(p) or {}).get("step") for p in inputs]
    if out.endswith(".safetensors"):
        from safetensors.numpy import save

        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with atomic_write(out, "wb", fsync=True) as f:
            f.write(save(averaged, metadata={"format": "np", "averaged_from": str(len(paths))}))
    else:
        state = {"step": max((s for s in steps if s is not None), default=None), "averaged_from":
                 [os.path.abspath(p) for p in inputs], "averaged_steps": steps,
                 "preprocessing": fingerprint}
        save_checkpoint(out, averaged, (), (), state, rng=False)
    log.info("averaged %d checkpoints into %s", len(paths), out)
    return {"output": os.path.abspath(out), "inputs": [os.path.abspath(p) for p in inputs], "steps": steps,
            "count": len(paths), "tensors": len(averaged)}
