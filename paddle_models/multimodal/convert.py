"""Weights from the PyTorch ecosystem in Paddle's names: torchvision ResNet, Hugging Face ERNIE-M, the twin.

Every key of the source is accounted for: mapped to a Paddle name (``Conversion.state``), dropped with a
reason (``Conversion.dropped``), or an error (``ConversionError`` naming the file and the key). What changes
between the two frameworks:

* ``nn.Linear`` weights: PyTorch stores ``[out, in]``, Paddle ``[in, out]``: transposed (chosen by the
  parameter's name, never by its shape, so square matrices are not guessed at);
* BatchNorm: ``running_mean`` / ``running_var`` are Paddle's ``_mean`` / ``_variance``; PyTorch's step
  counter ``num_batches_tracked`` has no Paddle counterpart and is dropped;
* Hugging Face ``ErnieMModel`` -> PaddleNLP ``ErnieMModel``: the attention's q/k/v projections sit one level
  deeper in HF (``encoder.layers.N.self_attn.self_attn.q_proj``) than in Paddle
  (``encoder.layers.N.self_attn.q_proj``); the embeddings, ``out_proj``, ``linear1/2``, ``norm1/2`` and the
  pooler keep their names. A task model (``ErnieMForSequenceClassification`` ...) nests the encoder under
  ``ernie_m.``; its head (``classifier.*``, ``qa_outputs.*`` ...) is dropped and reported;
* ``nn.MultiheadAttention``'s packed ``in_proj_weight`` / ``in_proj_bias`` (the twin's attentions) are split
  into Paddle's ``q_proj``, ``k_proj``, ``v_proj``.

Sources: ``convert_resnet`` (torchvision names: ``conv1``, ``bn1``, ``layer1.0.downsample.1`` ..., ``fc``) ->
``paddle.vision.models.resnet*`` names; ``convert_ernie`` (HF ``ErnieMModel`` or a HF task model) -> PaddleNLP
``ErnieMModel`` names; ``convert_twin`` (a whole-network checkpoint of ``benchmarks/torch_twin.py``) ->
``NetWork`` names. Floating-point arrays come out as float32 (the dtype of both Paddle models).
``check_hf_config`` compares a HF ``config.json`` with the sizes PaddleNLP builds.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..safe_pickle import load_torch
from ..safetensors_io import load_safetensors

#: torchvision / paddle.vision ResNet children -> their index in ``EncoderCNN.resnet`` (a Sequential)
RESNET_TOP = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
#: PyTorch BatchNorm parameter / statistic names -> Paddle's
BN_NAMES = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}
#: the reason printed for every ``num_batches_tracked``
STEP_COUNTER = "PyTorch's BatchNorm step counter (Paddle's BatchNorm has none)"
#: weight files of a Hugging Face model folder, in the order they are looked for
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


class ConversionError(ValueError):
    """A source key that is neither mapped nor known to be droppable, or a config that does not fit."""


@dataclass
class Conversion:
    """Paddle-named arrays and the source keys left out, each with the reason."""

    source: str
    state: dict[str, np.ndarray] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def drop(self, key: str, reason: str) -> None:
        self.dropped.append((key, reason))

    def summary(self) -> str:
        """``N mapped, M dropped`` and one line per reason: ``reason: k1, k2, ... (n)``."""
        lines = [f"{self.source}: {len(self.state)} key(s) mapped, {len(self.dropped)} dropped"]
        for reason in dict.fromkeys(r for _, r in self.dropped):
            keys = [k for k, r in self.dropped if r == reason]
            shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")
            lines.append(f"  dropped ({reason}): {shown}")
        return "\n".join(lines)


def _float32(value) -> np.ndarray:
    array = np.asarray(value)
    floating = array.dtype.kind == "f" or array.dtype.name == "bfloat16"
    return array.astype(np.float32, copy=False) if floating else array


def _linear_weight(value, source: str, key: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise ConversionError(f"{source}: {key}: a Linear weight of shape {array.shape} (expected 2 dimensions)")
    return np.ascontiguousarray(_float32(array).T)


# ---- reading -----------------------------------------------------------------------------------
def read_state(path: str) -> dict[str, np.ndarray]:
    """The state dict in a PyTorch file (``.pth`` / ``.bin``, torch.save's zip format) or a ``.safetensors``
    file, read without running code; a ``{"state_dict": ...}`` or ``{"model": ...}`` bundle is unwrapped."""
    from ..safe_pickle import is_safetensors

    if not os.path.isfile(path):
        raise ConversionError(f"{path}: weights file not found")
    state = load_safetensors(path) if is_safetensors(path) else load_torch(path)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return dict(state)


def is_hf_folder(path: str) -> bool:
    """A Hugging Face model folder: ``config.json`` written by transformers (it names ``model_type``)."""
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    try:
        with open(config, encoding="utf-8") as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError):
        return False


def read_hf_folder(path: str) -> tuple[dict[str, np.ndarray], dict, str]:
    """(state dict, config.json, the weights file) of a Hugging Face model folder; a sharded checkpoint
    (``*.index.json``) is read shard by shard."""
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    name = next((n for n in HF_WEIGHT_FILES if os.path.isfile(os.path.join(path, n))), None)
    if name is None:
        raise ConversionError(f"{path}: a Hugging Face folder without weights (none of {', '.join(HF_WEIGHT_FILES)})")
    weights = os.path.join(path, name)
    if not name.endswith(".index.json"):
        return read_state(weights), config, weights
    with open(weights, encoding="utf-8") as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    state: dict[str, np.ndarray] = {}
    for shard in shards:
        state.update(read_state(os.path.join(path, shard)))
    return state, config, weights


# ---- ResNet --------------------------------------------------------------------------------------
_RESNET_KEY = re.compile(r"(conv1|bn1|fc|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))\.(\w+)")


def _resnet_entry(conversion: Conversion, key: str, value) -> None:
    match = _RESNET_KEY.fullmatch(key)
    if match is None:
        raise ConversionError(f"{conversion.source}: {key}: not a torchvision ResNet key")
    module, leaf = match.group(1), match.group(3)
    is_conv = module == "conv1" or module.endswith(("conv1", "conv2", "conv3", "downsample.0"))
    if module == "fc" and leaf in ("weight", "bias"):
        conversion.state[key] = _linear_weight(value, conversion.source, key) if leaf == "weight" else _float32(value)
    elif is_conv and leaf == "weight":
        conversion.state[key] = _float32(value)
    elif not is_conv and leaf == "num_batches_tracked":
        conversion.drop(key, STEP_COUNTER)
    elif not is_conv and leaf in BN_NAMES:
        conversion.state[f"{module}.{BN_NAMES[leaf]}"] = _float32(value)
    else:
        raise ConversionError(f"{conversion.source}: {key}: not a torchvision ResNet key")


def convert_resnet(state: dict, source: str) -> Conversion:
    """torchvision ResNet names -> ``paddle.vision.models.resnet*`` names (``fc`` kept, transposed: the file
    loads strictly into ``paddle.vision.models.resnet101()``; ``NetWork`` drops it when loading)."""
    conversion = Conversion(source)
    for key, value in state.items():
        _resnet_entry(conversion, key, value)
    return conversion


def is_torch_resnet(state: dict) -> bool:
    """torchvision's names (BatchNorm statistics as ``running_mean`` / ``running_var``)."""
    return any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in state)


# ---- ERNIE-M ---------------------------------------------------------------------------------------
#: (HF ErnieMModel key, PaddleNLP key, transpose)
_ERNIE_RULES = [
    (re.compile(r"embeddings\.(word_embeddings|position_embeddings)\.weight"), r"embeddings.\1.weight", False),
    (re.compile(r"embeddings\.layer_norm\.(weight|bias)"), r"embeddings.layer_norm.\1", False),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.self_attn\.([qkv]_proj)\.weight"),
     r"encoder.layers.\1.self_attn.\2.weight", True),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.self_attn\.([qkv]_proj)\.bias"),
     r"encoder.layers.\1.self_attn.\2.bias", False),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.weight"), r"encoder.layers.\1.self_attn.out_proj.weight",
     True),
    (re.compile(r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.bias"), r"encoder.layers.\1.self_attn.out_proj.bias",
     False),
    (re.compile(r"encoder\.layers\.(\d+)\.(linear[12])\.weight"), r"encoder.layers.\1.\2.weight", True),
    (re.compile(r"encoder\.layers\.(\d+)\.(linear[12])\.bias"), r"encoder.layers.\1.\2.bias", False),
    (re.compile(r"encoder\.layers\.(\d+)\.(norm[12])\.(weight|bias)"), r"encoder.layers.\1.\2.\3", False),
    (re.compile(r"pooler\.dense\.weight"), "pooler.dense.weight", True),
    (re.compile(r"pooler\.dense\.bias"), "pooler.dense.bias", False),
]
_ERNIE_BUFFERS = {"embeddings.position_ids": "a buffer of position indices (PaddleNLP computes them)"}


def _ernie_entry(conversion: Conversion, key: str, value, prefix: str) -> None:
    for pattern, target, transpose in _ERNIE_RULES:
        if pattern.fullmatch(key):
            name = prefix + pattern.sub(target, key)
            conversion.state[name] = _linear_weight(value, conversion.source, key) if transpose else _float32(value)
            return
    if key in _ERNIE_BUFFERS:
        conversion.drop(prefix + key, _ERNIE_BUFFERS[key])
        return
    raise ConversionError(f"{conversion.source}: {key}: not a Hugging Face ErnieMModel key")


def is_hf_ernie(state: dict) -> bool:
    """Hugging Face's ERNIE-M names (the q/k/v projections under ``self_attn.self_attn``)."""
    return any(".self_attn.self_attn." in k for k in state)


def convert_ernie(state: dict, source: str, architecture: str | None = None, prefix: str = "") -> Conversion:
    """HF ``ErnieMModel`` names (or a task model's: ``ernie_m.`` + a head) -> PaddleNLP ``ErnieMModel`` names
    (each preceded by ``prefix``). The head is dropped, its reason naming ``architecture`` (config.json's
    ``architectures[0]``) when given."""
    conversion = Conversion(source)
    nested = any(k.startswith("ernie_m.") for k in state)
    head = f"the task head of {architecture or 'a Hugging Face ErnieM task model'} (not part of ErnieMModel)"
    for key, value in state.items():
        if nested and not key.startswith("ernie_m."):
            conversion.drop(key, head)
        else:
            _ernie_entry(conversion, key.removeprefix("ernie_m.") if nested else key, value, prefix)
    return conversion


#: HF config.json keys and their ErnieMConfig defaults (used when a config.json leaves a key out)
HF_ERNIE_DEFAULTS = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "intermediate_size": 3072, "max_position_embeddings": 514, "pad_token_id": 1,
                     "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def check_hf_config(config: dict, where: str, ernie_config=None) -> None:
    """A HF ERNIE-M ``config.json`` that PaddleNLP's ``ErnieMModel`` (feed-forward 4 x hidden wide, LayerNorm
    epsilon 1e-5) can hold; with ``ernie_config`` (the model's ``ErnieMConfig``, built from ``Arch.ernie``)
    also equal to it in every size, the vocabulary, ``pad_token_id`` and the activation. One error lists
    every difference, each naming the key."""
    value = {k: config.get(k, default) for k, default in HF_ERNIE_DEFAULTS.items()}
    problems = []
    if config.get("model_type", "ernie_m") != "ernie_m":
        problems.append(f"model_type is {config['model_type']!r}, not 'ernie_m'")
    if value["intermediate_size"] != 4 * value["hidden_size"]:
        problems.append(f"intermediate_size is {value['intermediate_size']}, but PaddleNLP's ErnieMModel builds "
                        f"its feed-forward layers 4 x hidden_size = {4 * value['hidden_size']} wide")
    if value["layer_norm_eps"] != 1e-5:
        problems.append(f"layer_norm_eps is {value['layer_norm_eps']}, but PaddleNLP's ErnieMModel uses 1e-05")
    for key in () if ernie_config is None else [k for k in HF_ERNIE_DEFAULTS if k != "layer_norm_eps"]:
        ours = getattr(ernie_config, key)
        if value[key] != ours:
            problems.append(f"{key} is {value[key]!r} but Arch.ernie.{key} is {ours!r}")
    if problems:
        raise ConversionError(f"{where}: " + "; ".join(problems))


# ---- the twin ------------------------------------------------------------------------------------
_TWIN_TOP = {v: k for k, v in RESNET_TOP.items()}


def _twin_resnet_key(key: str) -> str | None:
    """``resnet.resnet.<i>.rest`` -> the torchvision name (``layer3.5.bn2.weight``), None for other keys."""
    parts = key.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["resnet", "resnet"] and parts[2] in _TWIN_TOP:
        return f"{_TWIN_TOP[parts[2]]}.{parts[3]}"
    return None


def _split_in_proj(conversion: Conversion, module: str, leaf: str, value) -> None:
    """``nn.MultiheadAttention.in_proj_weight`` [3E, E] / ``in_proj_bias`` [3E] -> q/k/v projections."""
    array = _float32(value)
    if array.shape[0] % 3:
        raise ConversionError(f"{conversion.source}: {module}.{leaf}: first dimension {array.shape[0]} is not 3 x E")
    for name, part in zip(("q_proj", "k_proj", "v_proj"), np.split(array, 3), strict=True):
        key = f"{module}.{name}.{'weight' if leaf == 'in_proj_weight' else 'bias'}"
        conversion.state[key] = np.ascontiguousarray(part.T) if leaf == "in_proj_weight" else part


_TWIN_LINEAR = re.compile(r"(attention_(text|image)\.out_proj|classifier[12])\.(weight|bias)")
_TWIN_IN_PROJ = re.compile(r"(attention_text|attention_image)\.(in_proj_weight|in_proj_bias)")


def convert_twin(state: dict, source: str) -> Conversion:
    """A whole-network checkpoint of ``benchmarks/torch_twin.py`` (``ernie.*`` HF ErnieM, ``resnet.resnet.*``
    torchvision children, two ``nn.MultiheadAttention``, two Linear) -> ``NetWork`` names."""
    conversion = Conversion(source)
    ernie = {k[len("ernie."):]: v for k, v in state.items() if k.startswith("ernie.")}
    part = convert_ernie(ernie, source, prefix="ernie.")
    conversion.state.update(part.state)
    conversion.dropped += part.dropped
    for key, value in state.items():
        vision = _twin_resnet_key(key)
        if key.startswith("ernie."):
            continue
        if vision is not None:
            resnet = convert_resnet({vision: value}, source)
            conversion.state.update(map_resnet_names(resnet.state, "resnet.resnet."))
            conversion.dropped += [(key, reason) for _, reason in resnet.dropped]
        elif _TWIN_IN_PROJ.fullmatch(key):
            module, leaf = key.split(".")
            _split_in_proj(conversion, module, leaf, value)
        elif _TWIN_LINEAR.fullmatch(key):
            weight = key.endswith(".weight")
            conversion.state[key] = _linear_weight(value, source, key) if weight else _float32(value)
        else:
            raise ConversionError(f"{source}: {key}: not a key of the PyTorch twin (benchmarks/torch_twin.py)")
    return conversion


def is_twin(state: dict) -> bool:
    return "attention_text.in_proj_weight" in state


def map_resnet_names(state: dict, prefix: str = "") -> dict:
    """paddle.vision ResNet names (``layer3.5.conv2.weight``) -> ``EncoderCNN.resnet`` names (``6.5.conv2.weight``)
    preceded by ``prefix``; ``fc.*`` (the ImageNet head) and other keys are left out."""
    out = {}
    for key, value in state.items():
        top, _, rest = key.partition(".")
        if top in RESNET_TOP:
            out[f"{prefix}{RESNET_TOP[top]}.{rest}"] = value
    return out


# ---- files -----------------------------------------------------------------------------------------
#: what ``convert_source`` converts: --resnet, --ernie, --twin
KINDS = ("resnet", "ernie", "twin")


def convert_source(kind: str, path: str) -> Conversion:
    """Read ``path`` and convert it: ``resnet`` (a torchvision ``.pth``), ``ernie`` (a Hugging Face folder, its
    config.json checked for what PaddleNLP builds, or a HF-named weights file), ``twin`` (a whole-network
    checkpoint of the PyTorch twin)."""
    if kind == "ernie" and os.path.isdir(path):
        if not is_hf_folder(path):
            raise ConversionError(f"{path}: not a Hugging Face model folder (no config.json naming model_type)")
        state, config, weights = read_hf_folder(path)
        check_hf_config(config, os.path.join(path, "config.json"))
        return convert_ernie(state, weights, (config.get("architectures") or [None])[0])
    converters = {"resnet": convert_resnet, "ernie": convert_ernie, "twin": convert_twin}
    if kind not in converters:
        raise ConversionError(f"unknown source kind {kind!r} (one of {', '.join(KINDS)})")
    return converters[kind](read_state(path), path)


def write_safetensors(state: dict, path: str) -> str:
    """``state`` as a safetensors file at ``path`` (streamed, written atomically); returns ``path``."""
    from ..safetensors_io import save_safetensors

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return save_safetensors(state, path, metadata={"format": "np"})
