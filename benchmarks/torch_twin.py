#!/usr/bin/env python
"""The PyTorch twin of the faithful multimodal network, timed on the same batch as
``benchmarks/multimodal_step.py``. It is run by that benchmark in a child process (any Python that has
torch, torchvision and transformers: ``--torch-python``), and by ``benchmarks/torch_weights.py`` (the PyTorch
side of the weights parity check); the project never imports it.

Twin (``Twin``): transformers' ``ErnieMModel`` (the Hugging Face port of ERNIE-M; ernie-m-base sizes: 250,002
words, 768 hidden, 12 layers, 12 heads, 3072 FFN) for the text, torchvision's ResNet children up to layer4
+ ``AdaptiveAvgPool2d`` for the images (ResNet-101), ``nn.MultiheadAttention(768, 16)`` / ``(2048, 16)`` and
``Linear(5632, 1024) -> Linear(1024, 3)``; BN kept in eval mode as the baseline does. Its attribute names are
``NetWork``'s (``ernie``, ``resnet.resnet``, ``resnet.adaptive_pool``, ``attention_text``, ``attention_image``,
``classifier1``, ``classifier2``), so ``paddle_models.multimodal.convert.convert_twin`` maps its state dict.
``forward`` takes NetWork's seven inputs and computes either fusion the way NetWork does; in ``baseline``
ERNIE-M gets the mask PaddleNLP's ``ErnieMModel`` applies by default (token id 0 masked) explicitly.

Timing (``main``): random weights, AdamW; ``--bf16``: the forward passes (eval and train) under
``torch.autocast("cpu", torch.bfloat16)``. Prints one JSON line: eval_forward_s, train_step_s and the
samples/s of both.
"""
import argparse
import contextlib
import json
import time

import torch
import torchvision
from torch import nn
from transformers import ErnieMConfig, ErnieMModel

#: ErnieMConfig of ernie-m-base
ERNIE_M_BASE = {"vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "max_position_embeddings": 514, "pad_token_id": 1}
NEG_INF = -1e9  # NetWork's additive mask value


class EncoderCNN(nn.Module):
    """torchvision ResNet children up to layer4 (``resnet``) + global average pool: [N,3,H,W] -> [N, 2048]."""

    def __init__(self, layers=(3, 4, 23, 3)):
        super().__init__()
        trunk = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, list(layers))
        self.resnet = nn.Sequential(*list(trunk.children())[:-2])
        self.adaptive_pool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, images):
        return torch.flatten(self.adaptive_pool(self.resnet(images)), 1)


class Twin(nn.Module):
    """NetWork in PyTorch (see the module docstring); ``resnet_layers`` (3, 4, 23, 3) is ResNet-101."""

    def __init__(self, ernie=None, resnet_layers=(3, 4, 23, 3), num_classes=3, hidden=1024, text_heads=16,
                 image_heads=16, fusion="baseline"):
        super().__init__()
        self.fusion = fusion
        self.ernie = ErnieMModel(ErnieMConfig(**(ernie or ERNIE_M_BASE)))
        self.resnet = EncoderCNN(resnet_layers)
        h, c = self.ernie.config.hidden_size, 2048
        self.classifier1 = nn.Linear(2 * h + 2 * c, hidden)
        self.classifier2 = nn.Linear(hidden, num_classes)
        self.attention_text = nn.MultiheadAttention(h, text_heads, batch_first=True)
        self.attention_image = nn.MultiheadAttention(c, image_heads, batch_first=True)

    def train(self, mode=True):
        super().train(mode)
        for m in self.resnet.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def _encode_texts(self, input_ids, attention_mask, caption_ids, caption_mask):
        b, nc, length = caption_ids.shape
        ids = torch.cat([input_ids, caption_ids.reshape(-1, length)])
        if self.fusion == "baseline":  # PaddleNLP's default ErnieMModel mask, given explicitly
            mask = (ids != 0).long()
        else:
            mask = torch.cat([attention_mask, caption_mask.reshape(-1, length)])
        seq = self.ernie(ids, attention_mask=mask).last_hidden_state
        return seq[:b], seq[b:].reshape(b, nc, length, -1)

    def _text_branch(self, input_ids, attention_mask, caption_ids, caption_mask):
        post, caps = self._encode_texts(input_ids, attention_mask, caption_ids, caption_mask)
        present = (caption_mask[:, :, 0] > 0).to(post.dtype)
        has_cap = (present.sum(1, keepdim=True) > 0).to(post.dtype)
        if self.fusion == "baseline":
            avg = (caps * present[:, :, None, None]).sum(1) / present.sum(1).clamp(min=1.0)[:, None, None]
            att, _ = self.attention_text(post, avg, avg, need_weights=False)
        else:
            keys = caps.flatten(1, 2)
            pad = (1.0 - caption_mask.flatten(1, 2).to(post.dtype)) * NEG_INF
            att, _ = self.attention_text(post, keys, keys, key_padding_mask=pad, need_weights=False)
        return post[:, 0], att[:, 0] * has_cap

    def _image_branch(self, image, evidence_images, evidence_mask):
        b, ni = evidence_images.shape[:2]
        feats = self.resnet(torch.cat([image, evidence_images.reshape(-1, *evidence_images.shape[2:])]))
        post, ev = feats[:b], feats[b:].reshape(b, ni, -1)
        present = evidence_mask.to(post.dtype)
        has_img = (present.sum(1, keepdim=True) > 0).to(post.dtype)
        att, _ = self.attention_image(post.unsqueeze(1), ev, ev, key_padding_mask=(1.0 - present) * NEG_INF,
                                      need_weights=False)
        return post, att[:, 0] * has_img

    def forward(self, input_ids, attention_mask, caption_ids, caption_mask, image, evidence_images, evidence_mask):
        t_post, t_att = self._text_branch(input_ids, attention_mask, caption_ids, caption_mask)
        i_post, i_att = self._image_branch(image, evidence_images, evidence_mask)
        return self.classifier2(self.classifier1(torch.cat([t_post, t_att, i_post, i_att], dim=-1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--evidence", type=int, default=2, help="captions and evidence images per post")
    ap.add_argument("--bf16", action="store_true",
                    help='forward passes under torch.autocast("cpu", torch.bfloat16) (weights and AdamW stay fp32)')
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = Twin()
    g = torch.Generator().manual_seed(0)
    B, L, N = args.batch, args.length, args.evidence
    ids = torch.randint(5, 250002, (B, L), generator=g)
    cap_ids = torch.randint(5, 250002, (B, N, L), generator=g)
    image = torch.randn(B, 3, 224, 224, generator=g)
    ev = torch.randn(B, N, 3, 224, 224, generator=g)
    inputs = (ids, torch.ones_like(ids), cap_ids, torch.ones_like(cap_ids), image, ev, torch.ones(B, N))
    label = torch.tensor([i % 3 for i in range(B)])

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    model.eval()
    with torch.no_grad(), autocast():
        for _ in range(args.warmup):
            model(*inputs)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(*inputs)
        eval_s = (time.perf_counter() - t0) / args.steps

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with autocast():
            logits = model(*inputs)
        loss = nn.functional.cross_entropy(logits.float(), label)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    train_s = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"eval_forward_s": eval_s, "train_step_s": train_s, "eval_samples_per_s": B / eval_s,
                      "train_samples_per_s": B / train_s, "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters()),
                      "precision": "autocast bf16" if args.bf16 else "fp32"}))


if __name__ == "__main__":
    main()
