#!/usr/bin/env python
"""The PyTorch twin of the faithful multimodal network, timed on the same batch as
``benchmarks/multimodal_step.py``. It is run by that benchmark in a child process (any Python that has
torch, torchvision and transformers: ``--torch-python``), never imported by the project.

Twin: an XLM-R-sized encoder (transformers' XLMRobertaModel with ERNIE-M base's sizes: 250,002 words,
768 hidden, 12 layers, 12 heads, 3072 FFN) for the text, torchvision's resnet101 children up to layer4
+ AdaptiveAvgPool2d for the images, ``nn.MultiheadAttention(768, 16)`` / ``(2048, 16)`` and
``Linear(5632, 1024) -> Linear(1024, 3)``, random weights, AdamW; BN kept in eval mode as the baseline does.
``--bf16``: the forward passes (eval and train) under ``torch.autocast("cpu", torch.bfloat16)``.
Prints one JSON line: eval_forward_s, train_step_s and the samples/s of both.
"""
import argparse
import json
import time


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

    import torch
    import torchvision
    from torch import nn
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = XLMRobertaModel(XLMRobertaConfig(
                vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=514), add_pooling_layer=False)
            r = torchvision.models.resnet101(weights=None)
            self.resnet = nn.Sequential(*list(r.children())[:-2], nn.AdaptiveAvgPool2d((1, 1)))
            self.att_text = nn.MultiheadAttention(768, 16, batch_first=True)
            self.att_image = nn.MultiheadAttention(2048, 16, batch_first=True)
            self.classifier1 = nn.Linear(5632, 1024)
            self.classifier2 = nn.Linear(1024, 3)

        def train(self, mode=True):
            super().train(mode)
            for m in self.resnet.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
            return self

        def forward(self, ids, cap_ids, image, ev_images):
            b, nc, length = cap_ids.shape
            seq = self.text(torch.cat([ids, cap_ids.reshape(-1, length)]), attention_mask=None).last_hidden_state
            post, caps = seq[:b], seq[b:].reshape(b, nc, length, -1)
            avg = caps.mean(1)
            t_att, _ = self.att_text(post, avg, avg, need_weights=False)
            ni = ev_images.shape[1]
            feats = self.resnet(torch.cat([image, ev_images.reshape(-1, *ev_images.shape[2:])])).flatten(1)
            i_post, ev = feats[:b], feats[b:].reshape(b, ni, -1)
            i_att, _ = self.att_image(i_post.unsqueeze(1), ev, ev, need_weights=False)
            fused = torch.cat([post[:, 0], t_att[:, 0], i_post, i_att[:, 0]], dim=-1)
            return self.classifier2(self.classifier1(fused))

    model = Twin()
    g = torch.Generator().manual_seed(0)
    B, L, N = args.batch, args.length, args.evidence
    ids = torch.randint(5, 250002, (B, L), generator=g)
    cap_ids = torch.randint(5, 250002, (B, N, L), generator=g)
    image = torch.randn(B, 3, 224, 224, generator=g)
    ev = torch.randn(B, N, 3, 224, 224, generator=g)
    label = torch.tensor([i % 3 for i in range(B)])

    import contextlib

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    model.eval()
    with torch.no_grad(), autocast():
        for _ in range(args.warmup):
            model(ids, cap_ids, image, ev)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            model(ids, cap_ids, image, ev)
        eval_s = (time.perf_counter() - t0) / args.steps

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        with autocast():
            logits = model(ids, cap_ids, image, ev)
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
