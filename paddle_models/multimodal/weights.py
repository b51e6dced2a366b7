"""Loading weights into NetWork: a whole-model checkpoint, ERNIE-M weights, ResNet weights.

* whole model: the state dict of NetWork itself (the original baseline's names load as they are), or a
  whole-network PyTorch checkpoint of ``benchmarks/torch_twin.py`` (converted on load);
* ERNIE-M: PaddleNLP ``ErnieMModel`` names (``embeddings.word_embeddings.weight``, ``encoder.layers.0...``);
  a prefix ``ernie_m.`` / ``ernie.`` (task models) is stripped. Also a Hugging Face ERNIE-M folder
  (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``; its config is checked against
  ``Arch.ernie``) or a HF-named weights file, converted on load (``convert.convert_ernie``). Online:
  ``ernie-m-base``;
* ResNet: paddle.vision names (``conv1.weight``, ``bn1._mean``, ``layer3.22.conv2.weight``, ``fc.*``) mapped
  into ``resnet.resnet.N`` (conv1 -> 0, bn1 -> 1, layer1..layer4 -> 4..7); ``fc.*`` (the ImageNet head) is
  dropped and reported. Also torchvision's names (a ``resnet101-*.pth``), converted on load
  (``convert.convert_resnet``). Online: ``imagenet``.

PyTorch files are read without torch and without running code (``paddle_models.safe_pickle.load_torch``).
Every load reports missing, unexpected and shape-mismatched keys and fails on any of them unless
``strict`` is false; keys dropped by a conversion are listed with their reason. With no weights
configured, a warning says loudly that the encoders are random.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import paddle

from ..safe_pickle import UnsafeModelFile, safe_load
from .convert import (
    RESNET_TOP,
    Conversion,
    check_hf_config,
    convert_ernie,
    convert_resnet,
    convert_twin,
    is_hf_ernie,
    is_hf_folder,
    is_torch_resnet,
    is_twin,
    read_hf_folder,
)

log = logging.getLogger("paddle_models")


class WeightLoadError(RuntimeError):
    pass


def _read_state(path: str) -> dict[str, np.ndarray]:
    """The state dict in ``path``: a ``.safetensors`` file, a pickled ``.pdparams`` or a PyTorch file (read by
    ``paddle_models.safe_pickle.safe_load``: nothing in the file is run), or a folder holding one of
    ``model.safetensors`` (a checkpoint of our Trainer), ``model_state.pdparams`` (PaddleNLP), ``model.pdparams``."""
    if os.path.isdir(path):
        for name in ("model.safetensors", "model_state.pdparams", "model.pdparams"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise WeightLoadError(f"{path}: no model.safetensors, model_state.pdparams or model.pdparams "
                                  "in this folder")
    if not os.path.isfile(path):
        raise WeightLoadError(f"{path}: weights file not found")
    try:
        state = safe_load(path)
    except UnsafeModelFile:
        raise
    except Exception as e:  # corrupt or not a paddle file
        raise WeightLoadError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise WeightLoadError(f"{path}: expected a state dict, found {type(state).__name__}")
    if "model" in state and isinstance(state["model"], dict):  # a {"model": state dict, ...} bundle
        state = state["model"]
    return state


def _numpy_dtype(tensor, value) -> np.dtype:
    """The numpy dtype of a Paddle tensor (``paddle.float32`` -> float32) without copying it to numpy."""
    try:
        return np.dtype(str(tensor.dtype).removeprefix("paddle."))
    except TypeError:
        return tensor.numpy().dtype if hasattr(tensor, "numpy") else np.asarray(value).dtype


def apply_state(layer: paddle.nn.Layer, state: dict[str, np.ndarray], source: str, strict: bool = True,
                prefix: str = "", ignored: list[str] | None = None) -> dict:
    """Set ``state`` (names relative to ``layer``) into ``layer``; report and (strict) fail on problems."""
    own = layer.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: file {tuple(np.shape(state[k]))} vs model {tuple(own[k].shape)}"
                  for k in state if k in own and tuple(np.shape(state[k])) != tuple(own[k].shape)]
    report = {"source": source, "loaded": 0, "missing": [prefix + k for k in missing],
              "unexpected": [prefix + k for k in unexpected], "mismatched": [prefix + m for m in mismatched],
              "ignored": list(ignored or [])}
    problems = []
    for title, items in (("missing", report["missing"]), ("unexpected", report["unexpected"]),
                         ("shape-mismatched", report["mismatched"])):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{len(items)} {title} key(s): {shown}")
    if problems:
        msg = f"{source}: " + "; ".join(problems)
        if strict:
            raise WeightLoadError(msg + " (set Arch.pretrained.strict=false to load the rest anyway)")
        log.warning("%s", msg)
    ok = {}
    for k, v in state.items():
        if k in own and tuple(np.shape(v)) == tuple(own[k].shape):
            ok[k] = np.asarray(v).astype(_numpy_dtype(own[k], v), copy=False)
    layer.set_state_dict(ok)
    report["loaded"] = len(ok)
    if report["ignored"]:
        log.info("%s: ignored %d key(s) not part of this network: %s", source, len(report["ignored"]),
                 ", ".join(report["ignored"][:4]))
    return report


def _converted(conversion: Conversion) -> tuple[dict, list[str]]:
    """A conversion's state and dropped keys, its summary logged (every dropped key with its reason)."""
    log.info("%s", conversion.summary())
    return conversion.state, [key for key, _ in conversion.dropped]


def _hf_ernie_folder(model, folder: str) -> tuple[dict, list[str]]:
    """A Hugging Face ERNIE-M folder: config.json checked against the model's ``Arch.ernie``, then converted."""
    state, config, weights = read_hf_folder(folder)
    check_hf_config(config, os.path.join(folder, "config.json"), model.ernie.config)
    return _converted(convert_ernie(state, weights, (config.get("architectures") or [None])[0]))


def _ernie_state(model, spec: str) -> tuple[dict, list[str]]:
    if spec in ("ernie-m-base", "ernie-m-large"):
        from paddlenlp.transformers import ErnieMModel

        try:
            return {k: v.numpy() for k, v in ErnieMModel.from_pretrained(spec).state_dict().items()}, []
        except Exception as e:
            raise WeightLoadError(f"Arch.pretrained.ernie={spec!r}: could not download the official weights "
                                  f"({type(e).__name__}: {e}); give a local .pdparams path instead") from None
    if os.path.isdir(spec) and is_hf_folder(spec):
        return _hf_ernie_folder(model, spec)
    state = _read_state(spec)
    return _converted(convert_ernie(state, spec)) if is_hf_ernie(state) else (state, [])


def load_ernie(model, spec: str, strict: bool = True) -> dict:
    """ERNIE-M weights named by ``Arch.pretrained.ernie`` into ``model.ernie`` (see the module docstring)."""
    state, dropped = _ernie_state(model, spec)
    for p in ("ernie_m.", "ernie."):
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return apply_state(model.ernie, state, f"ERNIE-M weights {spec}", strict, prefix="ernie.", ignored=dropped)


def map_resnet_state(state: dict[str, np.ndarray]):
    """paddle.vision ResNet names -> EncoderCNN.resnet (Sequential) names; returns (mapped, ignored)."""
    mapped, ignored = {}, []
    for k, v in state.items():
        top, _, rest = k.partition(".")
        if top in RESNET_TOP:
            mapped[f"{RESNET_TOP[top]}.{rest}"] = v
        elif top == "fc":
            ignored.append(k)
        else:
            mapped[k] = v  # reported as unexpected by apply_state
    return mapped, ignored


def _resnet_state(model, spec: str) -> tuple[dict, list[str]]:
    if spec != "imagenet":
        state = _read_state(spec)
        return _converted(convert_resnet(state, spec)) if is_torch_resnet(state) else (state, [])
    from paddle.vision.models import resnet as pv

    ctor = {50: pv.resnet50, 101: pv.resnet101, 152: pv.resnet152}.get(model.resnet.depth)
    if ctor is None:
        raise WeightLoadError("Arch.pretrained.resnet='imagenet' needs a ResNet-50/101/152 trunk")
    try:
        return {k: v.numpy() for k, v in ctor(pretrained=True).state_dict().items()}, []
    except Exception as e:
        raise WeightLoadError(f"Arch.pretrained.resnet='imagenet': could not download the official weights "
                              f"({type(e).__name__}: {e}); give a local .pdparams path instead") from None


def load_resnet(model, spec: str, strict: bool = True) -> dict:
    """ResNet weights named by ``Arch.pretrained.resnet`` into ``model.resnet.resnet`` (see the module docstring)."""
    state, dropped = _resnet_state(model, spec)
    if any(k.split(".")[0] in RESNET_TOP for k in state):
        state, ignored = map_resnet_state(state)
    else:
        ignored = []
    return apply_state(model.resnet.resnet, state, f"ResNet weights {spec}", strict, prefix="resnet.resnet.",
                       ignored=dropped + ignored)


def _checkpoint_state(path: str) -> tuple[dict, list[str]]:
    state = _read_state(path)
    return _converted(convert_twin(state, path)) if is_twin(state) else (state, [])


def load_pretrained(model, pretrained_cfg, checkpoint_follows: bool = False) -> list[dict]:
    """Load what ``Arch.pretrained`` names; warn loudly about encoders left random (unless a whole-model
    checkpoint, ``Global.checkpoint``, is loaded right after: ``checkpoint_follows``)."""
    strict = bool(pretrained_cfg.get("strict", True))
    reports = []
    if pretrained_cfg.get("checkpoint"):
        checkpoint = pretrained_cfg["checkpoint"]
        state, dropped = _checkpoint_state(checkpoint)
        reports.append(apply_state(model, state, f"checkpoint {checkpoint}", strict, ignored=dropped))
    if pretrained_cfg.get("ernie"):
        reports.append(load_ernie(model, pretrained_cfg["ernie"], strict))
    if pretrained_cfg.get("resnet"):
        reports.append(load_resnet(model, pretrained_cfg["resnet"], strict))
    if not pretrained_cfg.get("checkpoint") and not checkpoint_follows:
        random_parts = [n for n, key in (("ERNIE-M", "ernie"), ("ResNet", "resnet")) if not pretrained_cfg.get(key)]
        if random_parts:
            log.warning("RANDOM WEIGHTS: %s %s randomly initialised: no pretrained weights configured "
                        "(Arch.pretrained.%s). Fine for tests and the synthetic demo; for real data give "
                        "local weights or the online names ernie-m-base / imagenet.",
                        " and ".join(random_parts), "is" if len(random_parts) == 1 else "are",
                        "/".join(k for n, k in (("ERNIE-M", "ernie"), ("ResNet", "resnet")) if n in random_parts))
    model.load_reports = reports
    return reports
