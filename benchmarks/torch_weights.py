#!/usr/bin/env python
"""The PyTorch side of the weights parity check (``paddle_models.commands.weights_parity``): random weights of
the real layouts saved the way the PyTorch ecosystem publishes them, and the reference outputs of the
reference implementations on fixed inputs. Run with a Python that has torch, torchvision and transformers
(``.venv-twin/bin/python``); the project never imports it.

``--out DIR`` receives:

* ``resnet.pth``: a torchvision ResNet state dict (``torch.save``, zip format; ``fc`` included);
* ``hf_ernie_safetensors/`` and ``hf_ernie_bin/``: transformers' ``ErnieMModel.save_pretrained`` as
  ``model.safetensors`` and as ``pytorch_model.bin`` (``safe_serialization=False``), each with ``config.json``;
* ``hf_task/``: ``ErnieMForSequenceClassification`` (the same encoder under ``ernie_m.`` + a 3-class head);
* ``twin.pth``: the whole ``benchmarks/torch_twin.py`` network, whose encoders are the ones above;
* ``inputs.npz``: ``images`` for the ResNet, ``input_ids`` / ``attention_mask`` for ERNIE-M (ernie-m-base's
  special ids: ``[CLS]`` 0, ``[PAD]`` 1, ``[SEP]`` 2), and NetWork's seven inputs as ``net_<name>``;
* ``reference.npz``: ``resnet_features`` (pooled layer4), ``resnet_logits``, ``ernie_sequence`` /
  ``ernie_pooled`` (explicit attention mask), ``twin_logits_baseline`` / ``twin_logits_masked``;
* ``reference.json``: the sizes, the library versions, how long each step took and ``fp32_noise``: how far each
  float32 output is from torch's own float64 computation (the floor of any float32 comparison).

Every parameter is moved off its initialisation (biases, LayerNorm and BatchNorm included) and the BatchNorm
statistics are measured on random images (none is 0 or 1), so a mapping that leaves any of them at a default
cannot pass; the features stay of order 1, so the text and the image branches both reach the logits.
``--size small`` uses a narrow ERNIE-M and a one-block-per-stage ResNet with the same code paths; ``--size
full`` ernie-m-base and ResNet-101.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
from transformers import ErnieMForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_twin import ERNIE_M_BASE, Twin  # noqa: E402

SIZES = {
    "small": {"ernie": {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 128, "max_position_embeddings": 130, "pad_token_id": 1},
              "resnet_layers": [1, 1, 1, 1], "hidden": 64, "heads": 4, "image": 64, "length": 12},
    "full": {"ernie": ERNIE_M_BASE, "resnet_layers": [3, 4, 23, 3], "hidden": 1024, "heads": 16, "image": 224,
             "length": 128},
}
CLS, PAD, SEP = 0, 1, 2


def randomise(model, generator, matrix_noise=None):
    """Every parameter moved off its initialisation: vectors (biases, LayerNorm and BatchNorm scales) by 0.1 N,
    matrices by ``matrix_noise`` N (None: by a tenth of their own spread)."""
    with torch.no_grad():
        for p in model.parameters():
            scale = 0.1 if p.ndim == 1 else matrix_noise or 0.1 * float(p.std())
            p.add_(torch.randn(p.shape, generator=generator) * scale)


def calibrate_batchnorm(encoder, image_size, generator):
    """BatchNorm running statistics measured on random images (train-mode forwards, a cumulative average), so
    that eval-mode activations stay of order 1 through all 101 layers (made-up statistics let them grow layer
    by layer until the image features drown the text's in the logits)."""
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    encoder.train()
    with torch.no_grad():
        for _ in range(2):
            encoder(torch.randn(4, 3, image_size, image_size, generator=generator))
    for m in norms:
        m.momentum = 0.1
    encoder.eval()


def token_ids(rng, n, length, vocab):
    """``n`` texts of random length: ``[CLS] ids [SEP]`` then ``[PAD]``; the mask marks the real tokens."""
    ids = np.full((n, length), PAD, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.int64)
    for i in range(n):
        k = int(rng.randint(3, length + 1))
        ids[i, :k] = np.concatenate([[CLS], rng.randint(5, vocab, size=k - 2), [SEP]])
        mask[i, :k] = 1
    return ids, mask


def make_inputs(size, seed):
    """Two posts: the first with two captions and two evidence images, the second with one of each (a
    padded slot); the ResNet images are the four post and evidence images."""
    rng = np.random.RandomState(seed)
    length, vocab, s = size["length"], size["ernie"]["vocab_size"], size["image"]
    input_ids, attention_mask = token_ids(rng, 2, length, vocab)
    caption_ids = np.full((2, 2, length), PAD, dtype=np.int64)
    caption_mask = np.zeros((2, 2, length), dtype=np.int64)
    for i, count in enumerate((2, 1)):
        caption_ids[i, :count], caption_mask[i, :count] = token_ids(rng, count, length, vocab)
    image = rng.randn(2, 3, s, s).astype(np.float32)
    evidence = np.zeros((2, 2, 3, s, s), dtype=np.float32)
    evidence[0] = rng.randn(2, 3, s, s)
    evidence[1, :1] = rng.randn(1, 3, s, s)
    evidence_mask = np.array([[1, 1], [1, 0]], dtype=np.float32)
    net = {"input_ids": input_ids, "attention_mask": attention_mask, "caption_ids": caption_ids,
           "caption_mask": caption_mask, "image": image, "evidence_images": evidence, "evidence_mask": evidence_mask}
    images = np.concatenate([image, evidence[0], evidence[1, :1]])
    ids, mask = token_ids(rng, 3, length, vocab)
    return {"images": images, "input_ids": ids, "attention_mask": mask, **{f"net_{k}": v for k, v in net.items()}}


def make_twin(size, seed):
    """The twin of ``size`` in eval mode with its weights moved off their initialisation (``randomise``), small
    residual-branch scales (every Bottleneck's bn3 x 0.2, as in trained ResNets: float32 stays well
    conditioned through 101 layers) and BatchNorm statistics measured on random images."""
    torch.manual_seed(seed)
    twin = Twin(ernie=size["ernie"], resnet_layers=size["resnet_layers"], hidden=size["hidden"],
                text_heads=size["heads"], image_heads=size["heads"])
    generator = torch.Generator().manual_seed(seed + 1)
    randomise(twin.ernie, generator, matrix_noise=0.04)  # ERNIE-M's matrices about as spread as trained ones
    for part in (twin.resnet, twin.attention_text, twin.attention_image, twin.classifier1, twin.classifier2):
        randomise(part, generator)
    with torch.no_grad():
        for block in twin.resnet.modules():
            if isinstance(block, torchvision.models.resnet.Bottleneck):
                block.bn3.weight.mul_(0.2)
    calibrate_batchnorm(twin.resnet, size["image"], torch.Generator().manual_seed(seed + 3))
    twin.eval()
    return twin


def save_files(twin, size, out, seconds):
    """resnet.pth, the three Hugging Face folders and twin.pth (see the module docstring)."""
    t0 = time.perf_counter()
    resnet = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, size["resnet_layers"])
    # its children up to layer4 are the twin's trunk, module for module: the same weights
    torch.nn.Sequential(*list(resnet.children())[:-2]).load_state_dict(twin.resnet.resnet.state_dict())
    randomise(resnet.fc, torch.Generator().manual_seed(3))
    torch.save(resnet.state_dict(), os.path.join(out, "resnet.pth"))
    twin.ernie.save_pretrained(os.path.join(out, "hf_ernie_safetensors"), safe_serialization=True)
    twin.ernie.save_pretrained(os.path.join(out, "hf_ernie_bin"), safe_serialization=False)
    task = ErnieMForSequenceClassification(twin.ernie.config.__class__(**size["ernie"], num_labels=3))
    task.ernie_m = twin.ernie
    randomise(task.classifier, torch.Generator().manual_seed(4))
    task.save_pretrained(os.path.join(out, "hf_task"), safe_serialization=False)
    torch.save(twin.state_dict(), os.path.join(out, "twin.pth"))
    seconds["save"] = time.perf_counter() - t0
    return resnet


def _outputs(twin, resnet, tensor):
    """{name: output} of the reference implementations on the inputs (see the module docstring)."""
    net = [tensor[f"net_{k}"] for k in ("input_ids", "attention_mask", "caption_ids", "caption_mask", "image",
                                         "evidence_images", "evidence_mask")]
    with torch.no_grad():
        images = tensor["images"]
        features = torch.flatten(resnet.avgpool(torch.nn.Sequential(*list(resnet.children())[:-2])(images)), 1)
        out = {"resnet_features": features, "resnet_logits": resnet(images)}
        ernie = twin.ernie(tensor["input_ids"], attention_mask=tensor["attention_mask"])
        out["ernie_sequence"], out["ernie_pooled"] = ernie.last_hidden_state, ernie.pooler_output
        for fusion in ("baseline", "masked"):
            twin.fusion = fusion
            out[f"twin_logits_{fusion}"] = twin(*net)
    return out


def reference_outputs(twin, resnet, inputs, seconds):
    """The float32 outputs, and how far they are from the same computation in float64 (``fp32_noise``: max |fp32 -
    fp64| / max |fp64| of each; the float32 rounding of torch itself, a floor for any comparison)."""
    t0 = time.perf_counter()
    tensor = {k: torch.from_numpy(v) for k, v in inputs.items()}
    out = _outputs(twin, resnet, tensor)
    seconds["forward"] = time.perf_counter() - t0
    wide = _outputs(twin.double(), resnet.double(),
                    {k: v.double() if v.is_floating_point() else v for k, v in tensor.items()})
    noise = {k: float((out[k].double() - wide[k]).abs().max() / wide[k].abs().max()) for k in out}
    twin.float(), resnet.float()
    return {k: v.numpy() for k, v in out.items()}, noise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    os.makedirs(args.out, exist_ok=True)
    seconds = {}
    t0 = time.perf_counter()
    twin = make_twin(size, args.seed)
    seconds["build"] = time.perf_counter() - t0
    resnet = save_files(twin, size, args.out, seconds)
    resnet.eval()
    inputs = make_inputs(size, args.seed + 2)
    np.savez(os.path.join(args.out, "inputs.npz"), **inputs)
    reference, noise = reference_outputs(twin, resnet, inputs, seconds)
    np.savez(os.path.join(args.out, "reference.npz"), **reference)
    import transformers

    info = {"size": args.size, "sizes": size, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "seconds": seconds, "fp32_noise": noise}
    with open(os.path.join(args.out, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
