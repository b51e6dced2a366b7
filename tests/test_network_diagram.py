"""The architecture diagram (tools/draw_architecture.py): its sizes are the built network's and those of the
printed original, its boxes are laid out without overlapping, and it renders to a PNG."""
import copy
import re
from pathlib import Path

import pytest

from paddle_models import load_config
from paddle_models.commands import draw_architecture
from paddle_models.commands.compare_arch import lazy_model
from paddle_models.multimodal.diagram import diagram_spec, draw_network_diagram, network_sizes
from paddle_models.multimodal.network import SMALL_ARCH, network_from_config

ROOT = Path(__file__).resolve().parents[1]
PRINTED = ROOT / "paddle_models" / "multimodal" / "fixtures" / "network_printed.txt"


def _printed_linear(text: str, name: str) -> tuple[int, int]:
    """(in_features, out_features) of the Linear printed as ``(name): Linear(...)``."""
    m = re.search(rf"\({name}\): Linear\(in_features=(\d+), out_features=(\d+)", text)
    assert m, f"{PRINTED}: no Linear named {name}"
    return int(m.group(1)), int(m.group(2))


def _small_network():
    arch = copy.deepcopy(SMALL_ARCH)
    arch["name"] = "ernie_m_resnet"
    return network_from_config(load_config(data={"Arch": arch})["Arch"])


def test_faithful_sizes_are_those_of_the_printed_network():
    sizes = network_sizes(lazy_model(str(ROOT / "configs/multimodal/ernie_m_resnet101.yaml"), []))
    printed = PRINTED.read_text(encoding="utf-8")
    assert (sizes["fused"], sizes["hidden"]) == _printed_linear(printed, "classifier1")
    assert (sizes["hidden"], sizes["num_classes"]) == _printed_linear(printed, "classifier2")
    text_block = printed[printed.index("(attention_text)"):]
    image_block = printed[printed.index("(attention_image)"):]
    assert sizes["text_dim"] == _printed_linear(text_block, "q_proj")[0]
    assert sizes["image_dim"] == _printed_linear(image_block, "q_proj")[0]
    assert sizes["ernie_layers"] == printed.count("TransformerEncoderLayer(")
    assert sizes["fused"] == 2 * sizes["text_dim"] + 2 * sizes["image_dim"]
    assert (sizes["text_heads"], sizes["image_heads"], sizes["resnet_depth"]) == (16, 16, 101)


def test_spec_shows_the_built_sizes_and_boxes_do_not_overlap():
    net = _small_network()
    sizes = network_sizes(net)
    in_features, out_features = net.classifier1.weight.shape
    boxes, arrows = diagram_spec(sizes)
    labels = {box.key: box.label for box in boxes}
    assert f"Linear({in_features}, {out_features})" in labels["classifier1"]
    assert f"MultiHeadAttention({net.attention_image.embed_dim}, {net.attention_image.num_heads})" in \
        labels["attention_image"]
    assert f"= {in_features}" in labels["concat"]
    assert "ResNet (custom trunk)" in labels["resnet"]  # the small preset is not a paddle.vision depth
    keys = set(labels)
    assert len(keys) == len(boxes)
    assert all(a.source in keys and a.target in keys for a in arrows)
    for box in boxes:
        assert 0 <= box.x - box.w / 2 and box.x + box.w / 2 <= 1 and 0 <= box.y - box.h / 2 and box.y + box.h / 2 <= 1
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = abs(a.x - b.x) >= (a.w + b.w) / 2 or abs(a.y - b.y) >= (a.h + b.h) / 2
            assert apart, f"boxes {a.key} and {b.key} overlap"


def test_draw_writes_a_png(tmp_path):
    import matplotlib.image

    path = draw_network_diagram(network_sizes(_small_network()), str(tmp_path / "sub" / "net.png"))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[1] > pixels.shape[0] > 300
    assert not list((tmp_path / "sub").glob("*.tmp*"))


def test_command_refuses_a_config_that_is_not_the_multimodal_network(tmp_path):
    with pytest.raises(ValueError, match="not the multimodal NetWork"):
        draw_architecture.main(["-c", str(ROOT / "configs/transformer/copy_toy.yaml"), "--out",
                                str(tmp_path / "x.png")])
    assert not (tmp_path / "x.png").exists()
