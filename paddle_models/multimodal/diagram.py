"""The architecture diagram of :class:`~paddle_models.multimodal.network.NetWork` as a PNG (matplotlib, Agg).

``network_sizes(model)`` reads the sizes the picture shows from a built network (ERNIE-M hidden size and
depth, the ResNet's output channels, the heads of both attentions, the classifier's shapes), so the diagram
of a config is the diagram of the model that config builds. ``diagram_spec(sizes)`` lays out the boxes and
arrows (plain data, testable without matplotlib); ``draw_network_diagram(sizes, path)`` renders them.

The wiring drawn is the one of ``NetWork.forward``: one ERNIE-M call encodes the post and its evidence
captions, one ResNet call the post image and the evidence images; ``attention_text`` lets the post tokens
attend to the caption tokens, ``attention_image`` the post image vector to the evidence image vectors; the
post's ``[CLS]`` vector, the text attention's ``[CLS]`` position, the image vector and the image attention's
output are concatenated and go through ``classifier1`` and ``classifier2`` with nothing between them.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plots import _atomic_savefig, _pyplot

TEXT_COLOUR = "#dbe9f6"
IMAGE_COLOUR = "#fde5cc"
FUSION_COLOUR = "#e2f0d9"
INPUT_COLOUR = "#f2f2f2"


@dataclass(frozen=True)
class Box:
    """One rectangle: centre ``(x, y)`` and size ``(w, h)`` in axes fractions, its text and fill colour."""

    key: str
    x: float
    y: float
    w: float
    h: float
    label: str
    colour: str


@dataclass(frozen=True)
class Arrow:
    """An arrow from the box ``source`` to the box ``target``, with an optional label at its middle; ``start`` /
    ``end`` fix its ends (axes fractions) where the line between the box centres would cross another box."""

    source: str
    target: str
    label: str = ""
    start: tuple[float, float] | None = None
    end: tuple[float, float] | None = None


def network_sizes(model) -> dict:
    """The sizes shown in the diagram, read from a built ``NetWork`` (lazy parameters are enough)."""
    fused, hidden = (int(d) for d in model.classifier1.weight.shape)  # Paddle Linear weights are [in, out]
    return {
        "text_dim": int(model.text_dim),
        "image_dim": int(model.image_dim),
        "ernie_layers": int(model.ernie.config.num_hidden_layers),
        "resnet_depth": model.resnet.depth,
        "text_heads": int(model.attention_text.num_heads),
        "image_heads": int(model.attention_image.num_heads),
        "fused": fused,
        "hidden": hidden,
        "num_classes": int(model.classifier2.weight.shape[1]),
        "fusion": model.fusion,
    }


def _input_boxes() -> list[Box]:
    return [
        Box("post_text", 0.08, 0.84, 0.14, 0.09, "post text\ninput_ids [B, L]", INPUT_COLOUR),
        Box("captions", 0.08, 0.64, 0.14, 0.09, "evidence captions\ncaption_ids [B, Nc, L]", INPUT_COLOUR),
        Box("post_image", 0.08, 0.36, 0.14, 0.09, "post image\nimage [B, 3, H, W]", INPUT_COLOUR),
        Box("evidence_images", 0.08, 0.16, 0.14, 0.09, "evidence images\n[B, Ni, 3, H, W]", INPUT_COLOUR),
    ]


def _encoder_boxes(sizes: dict) -> list[Box]:
    depth = sizes["resnet_depth"]
    resnet = f"ResNet-{depth}" if depth else "ResNet (custom trunk)"
    return [
        Box("ernie", 0.30, 0.74, 0.17, 0.26,
            f"ernie\nERNIE-M, {sizes['ernie_layers']} layers\nhidden {sizes['text_dim']}\n"
            "(one call: posts + captions)", TEXT_COLOUR),
        Box("resnet", 0.30, 0.26, 0.17, 0.26,
            f"resnet\n{resnet}\nchildren up to layer4\n+ AdaptiveAvgPool2D(1)\n-> {sizes['image_dim']} per image",
            IMAGE_COLOUR),
    ]


def _attention_boxes(sizes: dict) -> list[Box]:
    text_keys = ("caption tokens,\naveraged over captions" if sizes["fusion"] == "baseline"
                 else "tokens of every caption,\npadding masked")
    return [
        Box("attention_text", 0.54, 0.56, 0.19, 0.17,
            f"attention_text\nMultiHeadAttention({sizes['text_dim']}, {sizes['text_heads']})\n"
            f"query: post tokens\nkey/value: {text_keys}", TEXT_COLOUR),
        Box("attention_image", 0.54, 0.10, 0.19, 0.17,
            f"attention_image\nMultiHeadAttention({sizes['image_dim']}, {sizes['image_heads']})\n"
            "query: post image vector\nkey/value: evidence image vectors", IMAGE_COLOUR),
    ]


def _fusion_boxes(sizes: dict) -> list[Box]:
    t, i = sizes["text_dim"], sizes["image_dim"]
    return [
        Box("concat", 0.765, 0.50, 0.13, 0.76,
            f"concatenate\npost [CLS] {t}\n+ text att. [CLS] {t}\n+ post image {i}\n+ image att. {i}\n"
            f"= {2 * t + 2 * i}", FUSION_COLOUR),
        Box("classifier1", 0.925, 0.66, 0.13, 0.11,
            f"classifier1\nLinear({sizes['fused']}, {sizes['hidden']})", FUSION_COLOUR),
        Box("classifier2", 0.925, 0.44, 0.13, 0.11,
            f"classifier2\nLinear({sizes['hidden']}, {sizes['num_classes']})", FUSION_COLOUR),
        Box("logits", 0.925, 0.24, 0.13, 0.08, f"logits [B, {sizes['num_classes']}]", INPUT_COLOUR),
    ]


def diagram_spec(sizes: dict) -> tuple[list[Box], list[Arrow]]:
    """Boxes and arrows of the diagram for ``sizes`` (as :func:`network_sizes` returns them)."""
    boxes = _input_boxes() + _encoder_boxes(sizes) + _attention_boxes(sizes) + _fusion_boxes(sizes)
    t, i = sizes["text_dim"], sizes["image_dim"]
    arrows = [
        Arrow("post_text", "ernie"), Arrow("captions", "ernie"),
        Arrow("post_image", "resnet"), Arrow("evidence_images", "resnet"),
        Arrow("ernie", "attention_text", "tokens"),
        Arrow("resnet", "attention_image", "vectors"),
        Arrow("ernie", "concat", f"post [CLS] {t}", start=(0.385, 0.80), end=(0.70, 0.80)),
        Arrow("attention_text", "concat", f"position 0: {t}", start=(0.635, 0.56), end=(0.70, 0.56)),
        Arrow("resnet", "concat", f"post image {i}", start=(0.385, 0.30), end=(0.70, 0.30)),
        Arrow("attention_image", "concat", f"{i}", start=(0.635, 0.14), end=(0.70, 0.14)),
        Arrow("concat", "classifier1", f"{sizes['fused']}"),
        Arrow("classifier1", "classifier2", f"{sizes['hidden']} (no activation)"),
        Arrow("classifier2", "logits"),
    ]
    return boxes, arrows


def _edge_point(box: Box, toward: Box) -> tuple[float, float]:
    """Where the line from ``box``'s centre toward ``toward``'s centre leaves ``box``."""
    dx, dy = toward.x - box.x, toward.y - box.y
    scale = min(box.w / 2 / abs(dx) if dx else float("inf"), box.h / 2 / abs(dy) if dy else float("inf"))
    return box.x + dx * scale, box.y + dy * scale


def _draw(ax, boxes: list[Box], arrows: list[Arrow]) -> None:
    from matplotlib.patches import FancyBboxPatch

    by_key = {box.key: box for box in boxes}
    for box in boxes:
        ax.add_patch(FancyBboxPatch((box.x - box.w / 2, box.y - box.h / 2), box.w, box.h,
                                    boxstyle="round,pad=0.005", facecolor=box.colour, edgecolor="#404040"))
        ax.text(box.x, box.y, box.label, ha="center", va="center", fontsize=8.5)
    for arrow in arrows:
        source, target = by_key[arrow.source], by_key[arrow.target]
        start = arrow.start or _edge_point(source, target)
        end = arrow.end or _edge_point(target, source)
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "#404040", "lw": 1.1})
        if arrow.label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, arrow.label, ha="center", va="bottom",
                    fontsize=7.5, color="#1f3f7f", bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})


def draw_network_diagram(sizes: dict, path: str, title: str | None = None) -> str:
    """Write the diagram of ``sizes`` as a PNG at ``path`` (atomically) and return the path."""
    plt = _pyplot()
    boxes, arrows = diagram_spec(sizes)
    fig, ax = plt.subplots(figsize=(15, 7.5))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    _draw(ax, boxes, arrows)
    ax.set_title(title or f"NetWork ({sizes['fusion']} fusion): text and image encoders, two cross attentions, "
                 f"{sizes['fused']} -> {sizes['hidden']} -> {sizes['num_classes']} classifier", fontsize=11)
    try:
        return _atomic_savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)
