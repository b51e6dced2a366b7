"""The weights parity check: PyTorch weights, converted or loaded directly, give the reference outputs.

``benchmarks/torch_weights.py`` (run by a Python with torch, torchvision and transformers: :func:`twin_python`)
writes random weights of the real layouts the way the PyTorch ecosystem publishes them (a torchvision
``resnet.pth``, Hugging Face ERNIE-M folders as ``model.safetensors`` and ``pytorch_model.bin``, a HF task
model, the whole PyTorch twin) and the outputs of torchvision's ResNet, transformers' ``ErnieMModel`` and the
twin on fixed inputs. Here, without torch:

* :func:`compare_converted`: the files written by ``tools/convert_weights.py`` load strictly (nothing missing,
  nothing unexpected) into ``paddle.vision``'s ResNet (``resnet101()`` at full size), PaddleNLP's
  ``ErnieMModel`` and ``NetWork``, and give the reference ResNet features and logits, ERNIE-M sequence and
  pooled output (explicit attention mask on both sides) and the whole network's logits in both fusions;
* :func:`compare_direct`: ``Arch.pretrained.resnet=<resnet.pth>`` / ``ernie=<HF folder>`` /
  ``checkpoint=<twin.pth>`` load into ``NetWork`` with the same values as the converted files.

An error is ``max |paddle - torch| / max |torch|`` over the output; each must stay under :data:`REL_TOL`.
``--size small`` runs the same code paths on a narrow ERNIE-M and a one-block-per-stage ResNet.
"""
from __future__ import annotations

import copy
import os
import subprocess

import numpy as np

from .e2e import PY, ROOT, last_json_line

REL_TOL = 1e-4
TWIN_PYTHON_ENV = "PADDLE_MODELS_TWIN_PYTHON"
TORCH_SCRIPT = os.path.join(ROOT, "benchmarks", "torch_weights.py")
FAITHFUL_CONFIG = os.path.join(ROOT, "configs", "multimodal", "ernie_m_resnet101.yaml")
#: Arch of the small size (benchmarks/torch_weights.py SIZES["small"])
SMALL_ARCH = {"ernie": {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 128, "max_position_embeddings": 130, "pad_token_id": 1},
              "resnet": {"layers": [1, 1, 1, 1], "widths": [64, 128, 256, 512], "stem_width": 64},
              "hidden": 64, "text_heads": 4, "image_heads": 4}
NET_INPUTS = ("input_ids", "attention_mask", "caption_ids", "caption_mask", "image", "evidence_images",
              "evidence_mask")
#: converted files, by the source they come from (``<dir>/paddle/<name>``)
CONVERTED = {"resnet.safetensors": ("resnet", "resnet.pth"),
             "ernie_safetensors.safetensors": ("ernie", "hf_ernie_safetensors"),
             "ernie_bin.safetensors": ("ernie", "hf_ernie_bin"),
             "ernie_task.safetensors": ("ernie", "hf_task"),
             "network.safetensors": ("twin", "twin.pth")}


def twin_python() -> str | None:
    """A Python with torch, torchvision and transformers: ``$PADDLE_MODELS_TWIN_PYTHON``, else the checkout's
    ``.venv-twin/bin/python`` (``make bench-twin`` builds it); None when neither exists."""
    for path in (os.environ.get(TWIN_PYTHON_ENV), os.path.join(ROOT, ".venv-twin", "bin", "python")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def make_reference(out_dir: str, size: str, python: str, threads: int = 0) -> dict:
    """Run ``benchmarks/torch_weights.py`` with ``python``: the PyTorch files and reference outputs in ``out_dir``."""
    cmd = [python, TORCH_SCRIPT, "--out", out_dir, "--size", size, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return last_json_line(proc.stdout)


def load_reference(ref_dir: str) -> tuple[dict, dict]:
    """(inputs, reference outputs) written by ``benchmarks/torch_weights.py``."""
    return (dict(np.load(os.path.join(ref_dir, "inputs.npz"))), dict(np.load(os.path.join(ref_dir, "reference.npz"))))


def relative_error(got, want) -> float:
    """``max |got - want| / max |want|`` (the error relative to the output's scale)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {want.shape}")
    return float(np.abs(got - want).max() / max(np.abs(want).max(), np.finfo(np.float64).tiny))


def network_arch(size: str, fusion: str) -> dict:
    """A validated ``Arch`` of ``NetWork`` for ``size``: the faithful config at full size, ``SMALL_ARCH``
    otherwise; with ``fusion`` and no pretrained weights."""
    from ..config import load_config

    if size == "full":
        cfg = load_config(FAITHFUL_CONFIG, [f"Arch.fusion={fusion}"])
    else:
        arch = copy.deepcopy(SMALL_ARCH)
        arch.update(name="ernie_m_resnet", fusion=fusion)
        cfg = load_config(data={"Arch": arch})
    return cfg["Arch"]


def build_network(size: str, fusion: str, pretrained: dict | None = None):
    """``NetWork`` of ``size`` in eval mode, the weights of ``pretrained`` (an ``Arch.pretrained`` dict) loaded."""
    import paddle

    from .network import network_from_config
    from .weights import load_pretrained

    paddle.seed(0)
    net = network_from_config(network_arch(size, fusion))
    if pretrained:
        load_pretrained(net, {"checkpoint": None, "ernie": None, "resnet": None, "strict": True, **pretrained})
    net.eval()
    return net


def network_logits(net, inputs: dict) -> np.ndarray:
    import paddle

    with paddle.no_grad():
        return net(**{k: paddle.to_tensor(inputs[f"net_{k}"]) for k in NET_INPUTS}).numpy()


def convert_all(ref_dir: str, out_dir: str) -> dict[str, str]:
    """Every source of ``ref_dir`` through ``tools/convert_weights.py``'s code into ``out_dir``: {name: path}."""
    from .convert import convert_source, write_safetensors

    paths = {}
    for name, (kind, source) in CONVERTED.items():
        paths[name] = write_safetensors(convert_source(kind, os.path.join(ref_dir, source)).state,
                                        os.path.join(out_dir, name))
    return paths


# ---- the comparisons --------------------------------------------------------------------------------
def _resnet_outputs(path: str, size: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, ImageNet logits) of the converted ResNet file, loaded strictly: into
    ``paddle.vision.models.resnet101()`` at full size, into NetWork's ``EncoderCNN`` trunk + its ``fc`` otherwise."""
    import paddle

    from ..safetensors_io import load_safetensors
    from .convert import RESNET_TOP, map_resnet_names
    from .network import EncoderCNN
    from .weights import apply_state

    state = load_safetensors(path)
    x = paddle.to_tensor(images)
    with paddle.no_grad():
        if size == "full":
            model = paddle.vision.models.resnet101()
            apply_state(model, state, path)
            model.eval()
            features = paddle.flatten(paddle.nn.Sequential(*list(model.children())[:-1])(x), 1)
            return features.numpy(), model(x).numpy()
        encoder = EncoderCNN(layers=SMALL_ARCH["resnet"]["layers"], widths=SMALL_ARCH["resnet"]["widths"])
        apply_state(encoder.resnet, map_resnet_names(state), path)
        beside_trunk = sorted(k for k in state if k.split(".")[0] not in RESNET_TOP)
        if beside_trunk != ["fc.bias", "fc.weight"]:
            raise ValueError(f"{path}: expected fc.weight and fc.bias beside the trunk, found {beside_trunk}")
        encoder.eval()
        features = encoder(x).numpy()
        return features, features @ state["fc.weight"] + state["fc.bias"]


def _ernie_outputs(path: str, ernie_cfg: dict, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(sequence output, pooled output) of PaddleNLP's ``ErnieMModel`` holding the converted file (strictly),
    called with the inputs' explicit attention mask."""
    import paddle
    from paddlenlp.transformers import ErnieMConfig, ErnieMModel

    from ..safetensors_io import load_safetensors
    from .weights import apply_state

    model = ErnieMModel(ErnieMConfig(**ernie_cfg))
    apply_state(model, load_safetensors(path), path)
    model.eval()
    with paddle.no_grad():
        seq, pooled = model(paddle.to_tensor(inputs["input_ids"]),
                            attention_mask=paddle.to_tensor(inputs["attention_mask"]))
    return seq.numpy(), pooled.numpy()


def compare_converted(ref_dir: str, paddle_dir: str, size: str) -> dict:
    """Relative errors of the converted files against the reference outputs (see the module docstring)."""
    inputs, reference = load_reference(ref_dir)
    errors = {}
    features, logits = _resnet_outputs(os.path.join(paddle_dir, "resnet.safetensors"), size, inputs["images"])
    errors["resnet_features"] = relative_error(features, reference["resnet_features"])
    errors["resnet_logits"] = relative_error(logits, reference["resnet_logits"])
    ernie_cfg = dict(network_arch(size, "baseline")["ernie"])
    for name in ("ernie_safetensors", "ernie_bin", "ernie_task"):
        seq, pooled = _ernie_outputs(os.path.join(paddle_dir, f"{name}.safetensors"), ernie_cfg, inputs)
        errors[f"{name}_sequence"] = relative_error(seq, reference["ernie_sequence"])
        errors[f"{name}_pooled"] = relative_error(pooled, reference["ernie_pooled"])
    for fusion in ("baseline", "masked"):
        net = build_network(size, fusion, {"checkpoint": os.path.join(paddle_dir, "network.safetensors")})
        errors[f"network_logits_{fusion}"] = relative_error(network_logits(net, inputs),
                                                            reference[f"twin_logits_{fusion}"])
        del net
    return errors


def _digests(layer) -> dict[str, str]:
    import hashlib

    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in layer.state_dict().items()}


def compare_direct(ref_dir: str, size: str) -> dict:
    """``Arch.pretrained.checkpoint=<twin.pth>`` gives the twin's logits (both fusions); ``resnet=<resnet.pth>``
    and ``ernie=<HF folder>`` (safetensors and bin) load the same encoder values into NetWork. Returns the
    errors, the loading seconds and ``same_encoders`` (every encoder array equal bit for bit)."""
    import time

    inputs, reference = load_reference(ref_dir)
    t0 = time.perf_counter()
    net = build_network(size, "baseline", {"checkpoint": os.path.join(ref_dir, "twin.pth")})
    result = {"seconds": {"checkpoint_twin_pth": time.perf_counter() - t0}, "errors": {}}
    for fusion in ("baseline", "masked"):
        net.fusion = fusion
        result["errors"][f"network_logits_{fusion}"] = relative_error(network_logits(net, inputs),
                                                                      reference[f"twin_logits_{fusion}"])
    want = {"ernie": _digests(net.ernie), "resnet": _digests(net.resnet)}
    from .weights import load_ernie, load_resnet

    same = {}
    for name, load, spec in (("resnet_pth", load_resnet, "resnet.pth"), ("ernie_hf_safetensors", load_ernie,
                                                                        "hf_ernie_safetensors"),
                             ("ernie_hf_bin", load_ernie, "hf_ernie_bin"), ("ernie_hf_task", load_ernie, "hf_task")):
        part = "resnet" if name.startswith("resnet") else "ernie"
        for value in getattr(net, part).state_dict().values():  # zeroed: a load that skips a key cannot pass
            value.set_value(np.zeros_like(value.numpy()))
        t0 = time.perf_counter()
        load(net, os.path.join(ref_dir, spec))
        result["seconds"][name] = time.perf_counter() - t0
        same[name] = _digests(getattr(net, part)) == want[part]
    result["same_encoders"] = same
    return result


# ---- the whole check, each step in its own process ----------------------------------------------------
def parity_stages(out: str, size: str, python: str) -> list:
    """[(name, command)]: the PyTorch files and references, each conversion with ``tools/convert_weights.py``,
    then the comparisons of the converted files and of direct loading (``weights-parity --stage``)."""
    ref, converted = os.path.join(out, "torch"), os.path.join(out, "paddle")
    flags = {"resnet": "--resnet", "ernie": "--ernie", "twin": "--twin"}
    stages = [("torch", [python, TORCH_SCRIPT, "--out", ref, "--size", size])]
    for name, (kind, source) in CONVERTED.items():
        stages.append((f"convert {source}", [PY, "tools/convert_weights.py", flags[kind], os.path.join(ref, source),
                                             "--out", os.path.join(converted, name), "--json"]))
    for stage in ("converted", "direct"):
        stages.append((stage, [PY, "-m", "paddle_models", "weights-parity", "--stage", stage, "--out", out,
                               "--size", size, "--json"]))
    return stages


def train_step_stage(out: str, data_root: str) -> tuple[str, list]:
    """One training step of the faithful config on the MR2 sample with ``Arch.pretrained.resnet=<resnet.pth>``
    and ``ernie=<the HF folder>`` (the log must not announce random weights)."""
    from .e2e import CONFIG, ITEMS_FILE

    ref = os.path.join(out, "torch")
    overrides = [f"Data.root={data_root}", "Data.on_bad_image=skip", "Data.allow_empty_text=true",
                 f"Data.files={{train: {ITEMS_FILE}, val: {ITEMS_FILE}, test: {ITEMS_FILE}}}",
                 "Data.tokenizer_vocab_size=3000", f"Global.output_dir={os.path.join(out, 'train')}",
                 "Global.max_steps=1", "Global.epochs=1", "Global.progress=false", "Global.eval_engine=dygraph",
                 f"Arch.pretrained.resnet={os.path.join(ref, 'resnet.pth')}",
                 f"Arch.pretrained.ernie={os.path.join(ref, 'hf_ernie_safetensors')}"]
    return "train step", [PY, "tools/train.py", "-c", CONFIG, *[x for o in overrides for x in ("-o", o)], "--json"]


def run_weights_parity(out: str, size: str, python: str, data_root: str | None = None) -> dict:
    """Every stage of :func:`parity_stages` (and, given the MR2 sample ``data_root`` at full size, the training
    step): {"stages": {name: seconds, peak RSS, result}, "errors", "same_encoders", "torch_fp32_noise" (torch's
    own float32 vs float64 error of each reference output), "ok"}."""
    from .e2e import run_stage

    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    stages = parity_stages(out, size, python)
    if data_root and size == "full":
        stages.append(train_step_stage(out, data_root))
    summary = {"size": size, "tolerance": REL_TOL, "stages": {}}
    for name, cmd in stages:
        stage = run_stage(name.replace(" ", "_").replace("/", "_"), cmd, logs)
        if name.startswith("convert "):  # the counts; the tool's own JSON (in its log) lists every dropped key
            stage["result"] = {"mapped": stage["result"]["mapped"], "dropped": len(stage["result"]["dropped"])}
        summary["stages"][name] = stage
    summary["torch_fp32_noise"] = summary["stages"]["torch"]["result"]["fp32_noise"]
    converted = summary["stages"]["converted"]["result"]
    direct = summary["stages"]["direct"]["result"]
    summary["errors"] = {**converted["errors"], **{f"direct_{k}": v for k, v in direct["errors"].items()}}
    summary["same_encoders"] = direct["same_encoders"]
    summary["ok"] = max(summary["errors"].values()) < REL_TOL and all(direct["same_encoders"].values())
    if "train step" in summary["stages"]:
        with open(summary["stages"]["train step"]["log"], encoding="utf-8") as f:
            summary["train_step_random_weights_warning"] = "RANDOM WEIGHTS" in f.read()
        summary["ok"] = summary["ok"] and not summary["train_step_random_weights_warning"]
    return summary
