"""Atomic, verifiable checkpoints, written without pickle.

A checkpoint is a folder::

    model.safetensors          the model's state dict (structured names -> arrays)
    optimizer_<i>.safetensors  each optimizer's arrays (moments, beta powers, master weights)
    optimizer_<i>.json         the rest of that optimizer's state (LR_Scheduler, scalars), each array
                               replaced by {"__array__": "<its key in optimizer_<i>.safetensors>"}
    scheduler_<i>.json         each LR scheduler's state
    trainer.json               epoch, step, best metric, early-stopping counter, history, and
                               ``preprocessing``: the task's fingerprint of its tokenizer / vocabulary /
                               feature map (``Task.preprocessing_fingerprint``), checked on load
    rng.json                   the python, numpy and paddle RNG states
    manifest.json              size and sha256 of every file above, written last

No file is a pickle, so opening a checkpoint runs no code from it. Checkpoints of earlier versions
(``model.pdparams``, ``optimizer_<i>.pdopt``, ``rng.pkl``) still load, through the restricted unpickler of
``paddle_models.safe_pickle``; so does an explicit ``.pdparams`` file given as weights.

It is written into ``<name>.tmp`` and renamed into place only when complete; the previous good
checkpoint stays until then (as ``<name>.prev`` during the swap), so a crash never leaves a half-written
checkpoint under the real name. Loading checks the manifest: a truncated or corrupted file is a clear
error naming the file, and the ``.prev`` copy (if any) is named as the fallback.
"""
from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import paddle

from ..fileio import new_temp_folder, replace_folder
from ..safe_pickle import GeneratorStateRecord, is_safetensors, load_rng_pickle, safe_load
from .artifact import file_sha256  # noqa: F401  (also part of this module's API)

log = logging.getLogger("paddle_models")

MODEL_FILE = "model.safetensors"
OLD_MODEL_FILE = "model.pdparams"
_ARRAY_REF = "__array__"


class CheckpointError(RuntimeError):
    pass


# ---- RNG state <-> JSON ----------------------------------------------------------------------------

def rng_state() -> dict:
    """The python, numpy and paddle RNG states as JSON-able values."""
    version, internal, gauss = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    paddle_states = []
    for generator in paddle.get_rng_state():
        device, seed, offset, engine = generator.__getstate__()
        paddle_states.append({"device": device, "seed": seed, "offset": offset, "engine": list(engine)})
    return {"python": {"version": version, "internal": list(internal), "gauss_next": gauss},
            "numpy": {"kind": kind, "key": [int(k) for k in key], "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached)},
            "paddle": paddle_states}


def _generator_state(device, seed, offset, engine, where: str):
    """A paddle GeneratorState from its four parts, after checking their types."""
    ints = all(isinstance(x, int) and not isinstance(x, bool) for x in (device, seed, offset))
    if not ints or not isinstance(engine, (list, tuple)) or not all(isinstance(x, int) for x in engine):
        raise CheckpointError(f"{where}: paddle RNG state is not (int, int, int, list of int)")
    from paddle.base.libpaddle import GeneratorState

    generator = GeneratorState.__new__(GeneratorState)
    generator.__setstate__((device, seed, offset, list(engine)))
    return generator


def set_rng_state(state: dict, where: str = "rng state"):
    """Restore the RNG states that ``rng_state`` returned."""
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
    np.random.set_state((nps["kind"], np.asarray(nps["key"], dtype=np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))
    paddle.set_rng_state([_generator_state(s["device"], s["seed"], s["offset"], s["engine"], where)
                          for s in state["paddle"]])


def _set_old_rng_state(path: str):
    """Restore the RNG states from an ``rng.pkl`` of an earlier version (read by the restricted unpickler)."""
    state = load_rng_pickle(path)
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        gens = []
        for rec in state["paddle"]:
            if not isinstance(rec, GeneratorStateRecord) or not isinstance(rec.state, tuple) or len(rec.state) != 4:
                raise CheckpointError(f"{path}: paddle RNG state is not a GeneratorState")
            gens.append(_generator_state(*rec.state, where=path))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not an RNG state ({type(e).__name__}: {e})") from None
    paddle.set_rng_state(gens)


# ---- optimizer state <-> safetensors + JSON -------------------------------------------------------------

def _split_arrays(obj, arrays: dict, path: list, where: str):
    """``obj`` with every tensor/array moved into ``arrays`` (key: its path joined by '/') and replaced by
    ``{"__array__": key}``; numpy scalars become Python numbers. Anything else non-JSON is an error."""
    if isinstance(obj, (paddle.Tensor, np.ndarray)):
        key = "/".join(path)
        if key in arrays:
            raise CheckpointError(f"{where}: two state entries map to the array key {key!r}")
        arrays[key] = np.ascontiguousarray(obj.numpy() if isinstance(obj, paddle.Tensor) else obj)
        return {_ARRAY_REF: key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{where}: state key {k!r} at {'/'.join(path) or '<top>'} is not a string")
            out[k] = _split_arrays(v, arrays, path + [k], where)
        return out
    if isinstance(obj, (list, tuple)):
        return [_split_arrays(v, arrays, path + [str(i)], where) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"{where}: cannot store a {type(obj).__name__} at {'/'.join(path)} without pickle")


def _join_arrays(obj, arrays: dict, where: str):
    """Inverse of ``_split_arrays``; arrays come back as paddle tensors (what ``set_state_dict`` takes)."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY_REF}:
            key = obj[_ARRAY_REF]
            if key not in arrays:
                raise CheckpointError(f"{where}: refers to array {key!r}, which its .safetensors file lacks")
            return paddle.to_tensor(arrays[key])
        return {k: _join_arrays(v, arrays, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_arrays(v, arrays, where) for v in obj]
    return obj


def _to_tensors(obj):
    if isinstance(obj, np.ndarray):
        return paddle.to_tensor(obj)
    if isinstance(obj, dict):
        return {k: _to_tensors(v) for k, v in obj.items()}
    return obj


def _save_arrays(arrays: dict, path: str):
    from safetensors.numpy import save_file

    save_file(arrays, path, metadata={"format": "np"})


def _load_arrays(path: str) -> dict:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read arrays ({type(e).__name__}: {e})") from None


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


def _state_arrays(model) -> dict:
    """A Layer's state dict, or a ready ``name -> ndarray`` dict, as contiguous numpy arrays."""
    state = model if isinstance(model, dict) else model.state_dict()
    return {k: np.ascontiguousarray(v if isinstance(v, np.ndarray) else v.numpy()) for k, v in state.items()}


def save_checkpoint(path: str, model, optimizers=(), schedulers=(), trainer_state: dict | None = None,
                    rng: bool = True) -> str:
    """Write a checkpoint folder atomically at ``path``; returns ``path``. ``model`` is a Layer or a state
    dict of numpy arrays (averaged weights)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = new_temp_folder(path)
    _save_arrays(_state_arrays(model), os.path.join(tmp, MODEL_FILE))
    for i, opt in enumerate(optimizers):
        arrays = {}
        rest = _split_arrays(_rename_state(opt.state_dict(), _param_names(model)), arrays, [],
                             f"optimizer {i} ({type(opt).__name__})")
        _save_arrays(arrays, os.path.join(tmp, f"optimizer_{i}.safetensors"))
        with open(os.path.join(tmp, f"optimizer_{i}.json"), "w") as f:
            json.dump(rest, f, indent=1)
    for i, s in enumerate(schedulers):
        with open(os.path.join(tmp, f"scheduler_{i}.json"), "w") as f:
            json.dump({k: (float(v) if isinstance(v, (np.floating, float)) else v)
                       for k, v in s.state_dict().items()}, f)
    state = dict(trainer_state or {})
    with open(os.path.join(tmp, "trainer.json"), "w") as f:
        json.dump(state, f, indent=1, default=float)
    if rng:
        with open(os.path.join(tmp, "rng.json"), "w") as f:
            json.dump(rng_state(), f)
    files = sorted(os.listdir(tmp))
    manifest = {n: {"bytes": os.path.getsize(os.path.join(tmp, n)), "sha256": file_sha256(os.path.join(tmp, n))}
                for n in files}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    replace_folder(tmp, path)
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
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise CheckpointError(f"{file_path}: listed in the manifest but missing{fallback}")
        size = os.path.getsize(file_path)
        if size != meta["bytes"]:
            raise CheckpointError(f"{file_path}: truncated or changed ({size} bytes, manifest says {meta['bytes']})"
                                  f"{fallback}")
        if file_sha256(file_path) != meta["sha256"]:
            raise CheckpointError(f"{file_path}: corrupted (sha256 differs from the manifest){fallback}")
    return manifest


def resume_path(path: str) -> str | None:
    """The checkpoint to resume from: ``path`` if it verifies; else its ``.prev`` copy (left by a kill
    between the two renames of a save) with a warning; None when neither exists. A damaged checkpoint
    without a good ``.prev`` is an error."""
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
    """Verify and load a checkpoint folder into model/optimizers/schedulers; return the trainer state.

    A folder of an earlier version (``model.pdparams``, ``optimizer_<i>.pdopt``, ``rng.pkl``) is read
    through the restricted unpickler."""
    verify_checkpoint(path)
    load_model_weights(model, _weights_file(path))
    back = {structured: generated for generated, structured in _param_names(model).items()}
    for i, opt in enumerate(optimizers):
        arrays_path = os.path.join(path, f"optimizer_{i}.safetensors")
        tree_path = os.path.join(path, f"optimizer_{i}.json")
        old_path = os.path.join(path, f"optimizer_{i}.pdopt")
        if os.path.isfile(arrays_path) and os.path.isfile(tree_path):
            with open(tree_path) as f:
                opt_state = _join_arrays(json.load(f), _load_arrays(arrays_path), tree_path)
        elif os.path.isfile(old_path):
            opt_state = _to_tensors(_read_old_state(old_path))
        else:
            raise CheckpointError(f"{arrays_path}: missing (the checkpoint has fewer optimizers than this run)")
        opt.set_state_dict(_rename_state(opt_state, back))
    for i, s in enumerate(schedulers):
        with open(os.path.join(path, f"scheduler_{i}.json")) as f:
            s.set_state_dict(json.load(f))
    with open(os.path.join(path, "trainer.json")) as f:
        state = json.load(f)
    if restore_rng:
        if os.path.isfile(os.path.join(path, "rng.json")):
            with open(os.path.join(path, "rng.json")) as f:
                set_rng_state(json.load(f), os.path.join(path, "rng.json"))
        elif os.path.isfile(os.path.join(path, "rng.pkl")):
            _set_old_rng_state(os.path.join(path, "rng.pkl"))
    return state


def trainer_state_of(path: str) -> dict | None:
    """The ``trainer.json`` of the checkpoint holding ``path`` (a checkpoint folder or a weights file in
    one); None when there is none (a bare weights file)."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    trainer_file = os.path.join(folder, "trainer.json")
    if not os.path.isfile(trainer_file):
        return None
    try:
        with open(trainer_file, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{trainer_file}: unreadable trainer state ({e})") from None
    return state if isinstance(state, dict) else None


def check_preprocessing(path: str, current: dict | None) -> None:
    """Raise CheckpointError when the checkpoint at ``path`` was trained with other preprocessing than
    ``current`` (both fingerprints ``{"kind", "path", "sha256"}``, see ``Task.preprocessing_fingerprint``).
    Nothing is checked when either side has no fingerprint (a bare weights file, a task without one)."""
    state = trainer_state_of(path)
    saved = (state or {}).get("preprocessing")
    if not saved or not current or saved.get("sha256") == current.get("sha256"):
        return
    kind = current.get("kind") or saved.get("kind") or "preprocessing"
    raise CheckpointError(
        f"{path}: this checkpoint was trained with the {saved.get('kind', kind)} {saved.get('path')} "
        f"(sha256 {str(saved.get('sha256'))[:16]}...), but this run found the {kind} {current.get('path')} "
        f"(sha256 {str(current.get('sha256'))[:16]}...): a model only works with the {kind} it was trained "
        f"with; point the config at that one")


def _weights_file(folder: str) -> str:
    for name in (MODEL_FILE, OLD_MODEL_FILE):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise CheckpointError(f"{folder}: the checkpoint has no {MODEL_FILE} (nor an old {OLD_MODEL_FILE})")


def resolve_weights(path: str) -> str:
    """A checkpoint folder (verified), a ``.safetensors`` file or a ``.pdparams`` file -> the weights file."""
    if os.path.isdir(path):
        verify_checkpoint(path)
        return _weights_file(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def _read_old_state(path: str):
    """A pickled state dict (``.pdparams`` / ``.pdopt``) through the restricted unpickler; ``UnsafeModelFile``
    passes through, other failures become ``CheckpointError``."""
    from ..safe_pickle import UnsafeModelFile

    try:
        return safe_load(path)
    except UnsafeModelFile:
        raise
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None


def read_weights(path: str) -> dict:
    """The state dict (name -> ndarray) in a safetensors file or a pickled ``.pdparams`` file."""
    if is_safetensors(path):
        state = _load_arrays(path)
    else:
        state = _read_old_state(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def load_model_weights(model, path: str, strict: bool = True):
    """Load a state dict into ``model``; any missing/unexpected/shape-mismatched key is an error (strict).

    ``path`` is a checkpoint folder, a ``.safetensors`` file or a ``.pdparams`` file (read by the restricted
    unpickler: a file that references anything beyond arrays and containers raises ``UnsafeModelFile``)."""
    path = resolve_weights(path)
    state = read_weights(path)
    upgrade = getattr(model, "upgrade_state_dict", None)  # a model may map weights saved by an older layout
    if callable(upgrade):
        state = upgrade(state)
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
