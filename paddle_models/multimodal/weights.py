"""Loading weights into NetWork: a whole-model checkpoint, ERNIE-M weights, ResNet weights.

* whole model: the state dict of NetWork itself (the original baseline's names load as they are);
* ERNIE-M: PaddleNLP ``ErnieMModel`` names (``embeddings.word_embeddings.weight``, ``encoder.layers.0...``);
  a prefix ``ernie_m.`` / ``ernie.`` (task models) is stripped. Online: ``ernie-m-base``;
* ResNet: paddle.vision names (``conv1.weight``, ``bn1._mean``, ``layer3.22.conv2.weight``, ``fc.*``) mapped
  into ``resnet.resnet.N`` (conv1 -> 0, bn1 -> 1, layer1..layer4 -> 4..7); ``fc.*`` (the ImageNet head) is
  dropped and reported. Online: ``imagenet``.

Every load reports missing, unexpected and shape-mismatched keys and fails on any of them unless
``strict`` is false. With no weights configured, a warning says loudly that the encoders are random.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import paddle

from ..safe_pickle import UnsafeModelFile, safe_load

log = logging.getLogger("paddle_models")

RESNET_TOP = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


class WeightLoadError(RuntimeError):
    pass


def _read_state(path: str) -> dict[str, np.ndarray]:
    """The state dict in ``path``: a ``.safetensors`` file, a pickled ``.pdparams`` (read by the restricted
    unpickler of ``paddle_models.safe_pickle``: nothing in the file is run), or a folder holding one of
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
            ok[k] = np.asarray(v).astype(own[k].numpy().dtype if hasattr(own[k], "numpy") else v.dtype)
    layer.set_state_dict(ok)
    report["loaded"] = len(ok)
    if report["ignored"]:
        log.info("%s: ignored %d key(s) not part of this network: %s", source, len(report["ignored"]),
                 ", ".join(report["ignored"][:4]))
    return report


def load_ernie(model, spec: str, strict: bool = True) -> dict:
    if spec in ("ernie-m-base", "ernie-m-large"):
        from paddlenlp.transformers import ErnieMModel

        try:
            state = {k: v.numpy() for k, v in ErnieMModel.from_pretrained(spec).state_dict().items()}
        except Exception as e:
            raise WeightLoadError(f"Arch.pretrained.ernie={spec!r}: could not download the official weights "
                                  f"({type(e).__name__}: {e}); give a local .pdparams path instead") from None
    else:
        state = _read_state(spec)
    for p in ("ernie_m.", "ernie."):
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return apply_state(model.ernie, state, f"ERNIE-M weights {spec}", strict, prefix="ernie.")


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


def load_resnet(model, spec: str, strict: bool = True) -> dict:
    if spec == "imagenet":
        from paddle.vision.models import resnet as pv

        depth = model.resnet.depth
        ctor = {50: pv.resnet50, 101: pv.resnet101, 152: pv.resnet152}.get(depth)
        if ctor is None:
            raise WeightLoadError("Arch.pretrained.resnet='imagenet' needs a ResNet-50/101/152 trunk")
        try:
            state = {k: v.numpy() for k, v in ctor(pretrained=True).state_dict().items()}
        except Exception as e:
            raise WeightLoadError(f"Arch.pretrained.resnet='imagenet': could not download the official weights "
                                  f"({type(e).__name__}: {e}); give a local .pdparams path instead") from None
    else:
        state = _read_state(spec)
    if any(k.split(".")[0] in RESNET_TOP for k in state):
        state, ignored = map_resnet_state(state)
    else:
        ignored = []
    return apply_state(model.resnet.resnet, state, f"ResNet weights {spec}", strict, prefix="resnet.resnet.",
                       ignored=ignored)


def load_pretrained(model, pretrained_cfg, checkpoint_follows: bool = False) -> list[dict]:
    """Load what ``Arch.pretrained`` names; warn loudly about encoders left random (unless a whole-model
    checkpoint, ``Global.checkpoint``, is loaded right after: ``checkpoint_follows``)."""
    strict = bool(pretrained_cfg.get("strict", True))
    reports = []
    if pretrained_cfg.get("checkpoint"):
        checkpoint = pretrained_cfg["checkpoint"]
        reports.append(apply_state(model, _read_state(checkpoint), f"checkpoint {checkpoint}", strict))
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
