"""The faithful (345M-parameter) network builds from its config and runs one forward on CPU."""
import time

import numpy as np
import paddle
from conftest import ROOT

from paddle_models import build_model, get_task, load_config


def test_faithful_build_and_forward(tmp_path):
    cfg = load_config(str(ROOT / "configs" / "multimodal" / "ernie_m_resnet101.yaml"),
                      [f"Global.output_dir={tmp_path}"])
    t0 = time.time()
    model = build_model(cfg)
    build_s = time.time() - t0
    n = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert n == 345_567_427
    model.eval()
    task = get_task("multimodal")(cfg)
    batch = task.example_batch(model, batch_size=1)
    with paddle.no_grad():
        t0 = time.time()
        logits = model(**{k: paddle.to_tensor(v) for k, v in batch.items()})
        fwd_s = time.time() - t0
    assert logits.shape == [1, 3] and np.isfinite(logits.numpy()).all()
    print(f"faithful build {build_s:.1f}s, forward (B=1, L=16, 2 captions, 2 evidence images, 224px) {fwd_s:.2f}s")
