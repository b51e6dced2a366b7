"""The multimodal classifier of the study note: ERNIE-M (text) + ResNet (images) + two cross attentions.

Module tree, attribute names and layer types follow ``network_printed.txt`` (the MR2 rumour-detection
baseline as printed by Paddle), so a state dict of the original loads as it is::

    NetWork
      ernie            paddlenlp ErnieMModel(ErnieMConfig(...))
      resnet           EncoderCNN: resnet.resnet = paddle.vision ResNet children up to layer4,
                       resnet.adaptive_pool = AdaptiveAvgPool2D((1, 1))
      classifier1      Linear(2*H + 2*C, 1024)   (5632 = 768 + 768 + 2048 + 2048 for the base sizes)
      classifier2      Linear(1024, num_classes)
      attention_text   MultiHeadAttention(H, 16): post tokens attend to evidence-caption tokens
      attention_image  MultiHeadAttention(C, 16): post image attends to evidence images

``forward`` takes tensors only (tokenizing, decoding, padding happen in the collate function) and is
batched: one ERNIE-M call for all texts of the batch, one ResNet call for all images.

Two fusion modes:

* ``baseline`` reproduces the original numerics: ERNIE-M is called with input ids only (PaddleNLP's default
  mask, which masks id 0: with ernie-m-base's vocabulary that is ``[CLS]``, while ``[PAD]`` (id 1) is attended
  to, as in the original code), caption token features are averaged over the item's captions before the text
  attention, neither attention gets a token mask, and the concatenation [post CLS, text-attention CLS,
  post image, image-attention vector] goes through classifier1 and classifier2 with nothing between.
  The original looped over samples, so it never had padded caption or image *slots*; here padded slots
  are left out of the caption average and of the image attention, which makes the batched forward equal
  to the per-sample loop (tested).
* ``masked`` (default for new training): explicit attention masks for ERNIE-M, the post attends to the
  tokens of every evidence caption with padding masked, padded images are masked out of the image
  attention, and items without captions or images get a zero vector for that attention instead of NaN.

In both modes the ResNet's BatchNorm layers use running statistics while training when
``freeze_bn`` is set (the baseline kept the ResNet in eval mode).
"""
from __future__ import annotations

from collections.abc import Sequence

import paddle
import paddle.nn as nn
from paddle.vision.models import resnet as pv_resnet

from .nlp import transformers

NEG_INF = -1e9


def _build_resnet_trunk(depth: int, layers: Sequence[int] | None = None, widths: Sequence[int] | None = None,
                        stem_width: int = 64):
    """Children of a paddle.vision ResNet up to layer4 (no avgpool, no fc) and its output channels.

    ``depth`` 50/101/152 use paddle.vision's own constructors (so ImageNet weights map 1:1). A custom
    ``layers``/``widths`` pair builds the same topology from paddle.vision's ``BottleneckBlock``, narrower
    and shallower, for the small preset."""
    if not layers:
        ctor = {18: pv_resnet.resnet18, 34: pv_resnet.resnet34, 50: pv_resnet.resnet50,
                101: pv_resnet.resnet101, 152: pv_resnet.resnet152}.get(depth)
        if ctor is None:
            raise ValueError(f"Arch.resnet.depth: {depth} is not a paddle.vision ResNet depth (18, 34, 50, 101, 152)")
        net = ctor(pretrained=False)
        children = list(net.children())[:-2]  # drop avgpool and fc
        block = pv_resnet.BottleneckBlock if depth >= 50 else pv_resnet.BasicBlock
        return children, 512 * block.expansion
    widths = list(widths or [64, 128, 256, 512])
    if len(layers) != 4 or len(widths) != 4:
        raise ValueError("Arch.resnet.layers and Arch.resnet.widths need 4 entries each (layer1..layer4)")
    block = pv_resnet.BottleneckBlock
    children = [
        nn.Conv2D(3, stem_width, kernel_size=7, stride=2, padding=3, bias_attr=False),
        nn.BatchNorm2D(stem_width),
        nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2, padding=1),
    ]
    inplanes = stem_width
    for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
        stride = 1 if i == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2D(inplanes, planes * block.expansion, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(planes * block.expansion),
            )
        stage = [block(inplanes, planes, stride, downsample, 1, 64, 1, nn.BatchNorm2D)]
        inplanes = planes * block.expansion
        stage += [block(inplanes, planes, 1, None, 1, 64, 1, nn.BatchNorm2D) for _ in range(1, blocks)]
        children.append(nn.Sequential(*stage))
    return children, inplanes


class EncoderCNN(nn.Layer):
    """ResNet trunk (``resnet``) + global average pool (``adaptive_pool``): images [N,3,H,W] -> [N, C]."""

    def __init__(self, depth: int = 101, layers=None, widths=None, stem_width: int = 64):
        super().__init__()
        children, self.out_channels = _build_resnet_trunk(depth, layers, widths, stem_width)
        self.depth = None if layers else depth  # paddle.vision depth, None for a custom trunk
        self.resnet = nn.Sequential(*children)
        self.adaptive_pool = nn.AdaptiveAvgPool2D((1, 1))

    def forward(self, images):
        x = self.adaptive_pool(self.resnet(images))
        return paddle.flatten(x, start_axis=1)


def _shape_plus(x, last: int):
    """``x.shape + [last]`` as a reshape target: Python ints in dygraph; in a static graph one shape op and
    a concat instead of a shape/slice pair per dynamic axis and a stack."""
    if paddle.in_dynamic_mode():
        return list(x.shape) + [last]
    return paddle.concat([paddle.shape(x).astype("int64"), paddle.full([1], last, "int64")])


class NetWork(nn.Layer):
    """ERNIE-M + ResNet multimodal classifier (see the module docstring)."""

    def __init__(self, ernie_config: dict, resnet_depth: int = 101, resnet_layers=None, resnet_widths=None,
                 resnet_stem_width: int = 64, num_classes: int = 3, hidden: int = 1024, text_heads: int = 16,
                 image_heads: int = 16, fusion: str = "masked", modalities: Sequence[str] = ("text", "image"),
                 freeze_bn: bool = True, freeze_word_embeddings: bool = False):
        super().__init__()
        nlp = transformers()
        ErnieMConfig, ErnieMModel = nlp.ErnieMConfig, nlp.ErnieMModel

        if fusion not in ("baseline", "masked"):
            raise ValueError(f"Arch.fusion: {fusion!r} is not one of baseline, masked")
        bad = [m for m in modalities if m not in ("text", "image")]
        if bad or not modalities:
            raise ValueError(f"Arch.modalities: {list(modalities)!r}; use [text], [image] or [text, image]")
        self.fusion = fusion
        self.modalities = tuple(modalities)
        self.freeze_bn = bool(freeze_bn)
        self.ernie = ErnieMModel(ErnieMConfig(**ernie_config))
        self.resnet = EncoderCNN(resnet_depth, resnet_layers, resnet_widths, resnet_stem_width)
        h, c = self.ernie.config.hidden_size, self.resnet.out_channels
        self.text_dim, self.image_dim = h, c
        self.classifier1 = nn.Linear(2 * h + 2 * c, hidden)
        self.classifier2 = nn.Linear(hidden, num_classes)
        self.attention_text = nn.MultiHeadAttention(h, text_heads)
        self.attention_image = nn.MultiHeadAttention(c, image_heads)
        if freeze_word_embeddings:  # a speed lever: AdamW then skips the 192M-parameter table
            self.ernie.embeddings.word_embeddings.weight.stop_gradient = True

    # The baseline kept the ResNet in eval mode (running BN statistics) even while training.
    def train(self):
        super().train()
        if self.freeze_bn:
            for layer in self.resnet.sublayers():
                if isinstance(layer, nn.layer.norm._BatchNormBase):
                    layer.eval()
        return self

    # ---- encoders ----------------------------------------------------------------------------
    # Written with flatten/unsqueeze and "-1" reshapes where possible: in an exported graph every
    # Python-side size (x.shape[i] of a dynamic axis) becomes shape/slice/stack ops, which cost as much
    # as real kernels on the small model (see benchmarks/inference.py). Same values either way.
    def _encode_texts(self, input_ids, attention_mask, caption_ids, caption_mask):
        """One ERNIE-M call over the posts and all their captions: [B,L,H] and [B,Nc,L,H]."""
        b = input_ids.shape[0]
        ids = paddle.concat([input_ids, caption_ids.flatten(0, 1)], axis=0)
        if self.fusion == "baseline":
            seq, _ = self.ernie(ids)  # default mask: id 0 is padding
        else:
            mask = paddle.concat([attention_mask, caption_mask.flatten(0, 1)], axis=0)
            seq, _ = self.ernie(ids, attention_mask=mask)
        post = seq[:b]
        caps = seq[b:].reshape(_shape_plus(caption_ids, self.text_dim))
        return post, caps

    def _encode_images(self, image, evidence_images):
        """One ResNet call over the post images and all evidence images: [B,C] and [B,Ni,C]."""
        b = image.shape[0]
        feats = self.resnet(paddle.concat([image, evidence_images.flatten(0, 1)], axis=0))
        return feats[:b], feats[b:].reshape([b, -1, self.image_dim])

    # ---- fusion ------------------------------------------------------------------------------
    def _text_branch(self, input_ids, attention_mask, caption_ids, caption_mask):
        post, caps = self._encode_texts(input_ids, attention_mask, caption_ids, caption_mask)
        cap_present = (caption_mask[:, :, 0] > 0).astype(post.dtype)  # [B, Nc]: slot holds a caption ([CLS])
        has_cap = (cap_present.sum(axis=1, keepdim=True) > 0).astype(post.dtype)  # [B, 1]
        if self.fusion == "baseline":
            count = paddle.clip(cap_present.sum(axis=1), min=1.0).reshape([-1, 1, 1])
            avg = (caps * cap_present.unsqueeze([2, 3])).sum(axis=1) / count  # [B, L, H]
            att = self.attention_text(post, avg, avg)
        else:
            keys = caps.flatten(1, 2)  # [B, Nc*L, H]
            key_ok = caption_mask.flatten(1, 2).unsqueeze([1, 2]).astype(post.dtype)  # [B, 1, 1, Nc*L]
            att = self.attention_text(post, keys, keys, attn_mask=paddle.scale(key_ok, -NEG_INF, NEG_INF))
        return post[:, 0], att[:, 0] * has_cap

    def _image_branch(self, image, evidence_images, evidence_mask):
        post, ev = self._encode_images(image, evidence_images)
        present = evidence_mask.astype(post.dtype)  # [B, Ni]
        has_img = (present.sum(axis=1, keepdim=True) > 0).astype(post.dtype)
        mask = paddle.scale(present, -NEG_INF, NEG_INF).unsqueeze([1, 2])  # (1 - present) * NEG_INF: [B,1,1,Ni]
        att = self.attention_image(post.unsqueeze(1), ev, ev, attn_mask=mask)
        return post, att[:, 0] * has_img

    def forward(self, input_ids, attention_mask, caption_ids, caption_mask, image, evidence_images, evidence_mask):
        b = input_ids.shape[0] if "text" in self.modalities else image.shape[0]
        if "text" in self.modalities:
            t_post, t_att = self._text_branch(input_ids, attention_mask, caption_ids, caption_mask)
        else:  # ablation: the classifier sees zeros for the text features
            t_post = t_att = paddle.zeros([b, self.text_dim], dtype="float32")
        if "image" in self.modalities:
            i_post, i_att = self._image_branch(image, evidence_images, evidence_mask)
        else:
            i_post = i_att = paddle.zeros([b, self.image_dim], dtype="float32")
        fused = paddle.concat([t_post, t_att, i_post, i_att], axis=-1)
        return self.classifier2(self.classifier1(fused))


INPUT_NAMES = ("input_ids", "attention_mask", "caption_ids", "caption_mask", "image", "evidence_images",
               "evidence_mask")


# ---- registry ------------------------------------------------------------------------------------
from ..registry import register_model  # noqa: E402

SMALL_ARCH = {
    "ernie": {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 130, "hidden_dropout_prob": 0.0,
              "attention_probs_dropout_prob": 0.0},
    "resnet": {"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 16},
    "hidden": 64, "text_heads": 4, "image_heads": 4,
}


def network_from_config(arch) -> NetWork:
    r = arch["resnet"]
    return NetWork(
        ernie_config=dict(arch["ernie"]), resnet_depth=r["depth"], resnet_layers=r["layers"] or None,
        resnet_widths=r["widths"] or None, resnet_stem_width=r["stem_width"], num_classes=arch["num_classes"],
        hidden=arch["hidden"], text_heads=arch["text_heads"], image_heads=arch["image_heads"],
        fusion=arch["fusion"], modalities=arch["modalities"], freeze_bn=arch["freeze_bn"],
        freeze_word_embeddings=arch["freeze_word_embeddings"],
    )


@register_model("ernie_m_resnet", family="multimodal", small_config={"Arch": SMALL_ARCH})
def build_ernie_m_resnet(cfg) -> NetWork:
    """NetWork from ``cfg.Arch``, with the weights named in ``Arch.pretrained`` loaded (loudly reported)."""
    from .weights import load_pretrained

    model = network_from_config(cfg["Arch"])
    global_cfg = cfg["Global"]
    load_pretrained(model, cfg["Arch"]["pretrained"],
                    checkpoint_follows=bool(global_cfg["checkpoint"]) and not global_cfg["resume"])
    return model
