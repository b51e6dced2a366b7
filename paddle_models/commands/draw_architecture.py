"""Draw the architecture diagram of the multimodal network a config builds (a PNG, for the docs).

    python tools/draw_architecture.py -c configs/multimodal/ernie_m_resnet101.yaml \
        --out docs/images/multimodal_network.png [--json]

The model is built with lazy (uninitialised) parameters and no pretrained weights, so the sizes in the
picture are the built network's own; the drawing is ``paddle_models/multimodal/diagram.py``.
"""
from ..cli import base_parser, emit_json, setup_logging


def parser(prog=None):
    p = base_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--out", default="docs/images/multimodal_network.png", help="PNG file to write")
    p.add_argument("--title", default=None, help="title above the diagram (default: names the sizes)")
    return p


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    setup_logging(quiet=True)
    from ..multimodal.diagram import draw_network_diagram, network_sizes
    from .compare_arch import lazy_model

    model = lazy_model(args.config, args.override)
    if not hasattr(model, "attention_image"):
        raise ValueError(f"{args.config}: Arch.name builds {type(model).__name__}, not the multimodal NetWork")
    sizes = network_sizes(model)
    path = draw_network_diagram(sizes, args.out, args.title)
    print(f"diagram: {path}")
    if args.json:
        emit_json({"png": path, "sizes": sizes})
    return 0
