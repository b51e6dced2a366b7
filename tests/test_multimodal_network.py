"""NetWork: batched forward vs the baseline's per-sample loop, masking, zero evidence, weights."""
import copy

import numpy as np
import paddle
import pytest

from paddle_models import load_config
from paddle_models.multimodal.network import SMALL_ARCH, network_from_config
from paddle_models.multimodal.weights import WeightLoadError, load_pretrained, map_resnet_state


def small_cfg(**arch):
    a = copy.deepcopy(SMALL_ARCH)
    a.update(arch)
    a["name"] = "ernie_m_resnet"
    return load_config(data={"Arch": a})


def make_net(fusion="baseline", seed=0, **arch):
    paddle.seed(seed)
    net = network_from_config(small_cfg(fusion=fusion, **arch)["Arch"])
    net.eval()
    return net


def random_batch(rng, b=3, nc=3, ni=2, seq_len=12, hw=32, vocab=1000, n_caps=None, n_imgs=None):
    """Random ids padded with 0 (ERNIE-M's default mask treats id 0 as padding); per-item caption and
    image counts; padded slots are all-zero."""
    n_caps = n_caps if n_caps is not None else rng.randint(1, nc + 1, size=b)
    n_imgs = n_imgs if n_imgs is not None else rng.randint(1, ni + 1, size=b)

    def ids(n):
        out = np.zeros((n, seq_len), "int64")
        mask = np.zeros((n, seq_len), "int64")
        for i in range(n):
            k = rng.randint(3, seq_len + 1)
            out[i, :k] = rng.randint(5, vocab, size=k)
            out[i, 0] = 1  # a [CLS]-like first token
            mask[i, :k] = 1
        return out, mask

    input_ids, attention_mask = ids(b)
    caption_ids = np.zeros((b, nc, seq_len), "int64")
    caption_mask = np.zeros((b, nc, seq_len), "int64")
    for i in range(b):
        c, m = ids(n_caps[i])
        caption_ids[i, : n_caps[i]], caption_mask[i, : n_caps[i]] = c, m
    image = rng.randn(b, 3, hw, hw).astype("float32")
    evidence = np.zeros((b, ni, 3, hw, hw), "float32")
    ev_mask = np.zeros((b, ni), "float32")
    for i in range(b):
        evidence[i, : n_imgs[i]] = rng.randn(n_imgs[i], 3, hw, hw)
        ev_mask[i, : n_imgs[i]] = 1
    return dict(input_ids=input_ids, attention_mask=attention_mask, caption_ids=caption_ids,
                caption_mask=caption_mask, image=image, evidence_images=evidence, evidence_mask=ev_mask), n_caps, n_imgs


def T(batch):
    return {k: paddle.to_tensor(v) for k, v in batch.items()}


def baseline_loop_reference(net, batch, n_caps, n_imgs):
    """The original baseline, written its way: one sample at a time, each sample's captions through
    ERNIE-M on their own (input ids only), caption features averaged, each image through the ResNet one
    at a time, no masks in the attentions."""
    logits = []
    for b in range(batch["input_ids"].shape[0]):
        post_seq = net.ernie(paddle.to_tensor(batch["input_ids"][b: b + 1]))[0]
        cap_seq = net.ernie(paddle.to_tensor(batch["caption_ids"][b, : n_caps[b]]))[0]
        cap_avg = paddle.mean(cap_seq, axis=0, keepdim=True)
        text_att = net.attention_text(post_seq, cap_avg, cap_avg)[:, 0]
        img = net.resnet(paddle.to_tensor(batch["image"][b: b + 1]))
        ev = paddle.concat([net.resnet(paddle.to_tensor(batch["evidence_images"][b, j: j + 1]))
                            for j in range(n_imgs[b])], axis=0).unsqueeze(0)
        img_att = net.attention_image(img.unsqueeze(1), ev, ev)[:, 0]
        fused = paddle.concat([post_seq[:, 0], text_att, img, img_att], axis=-1)
        logits.append(net.classifier2(net.classifier1(fused)))
    return paddle.concat(logits, axis=0).numpy()


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("seed", [0, 1])
def test_baseline_mode_equals_per_sample_loop(seed):
    rng = np.random.RandomState(seed)
    net = make_net("baseline", seed=seed)
    batch, n_caps, n_imgs = random_batch(rng)
    with paddle.no_grad():
        got = net(**T(batch)).numpy()
        ref = baseline_loop_reference(net, batch, n_caps, n_imgs)
    assert got.shape == (3, 3)
    assert rel_err(got, ref) < 1e-5


def test_baseline_mode_ignores_ids_mask_but_masked_mode_uses_it():
    """baseline calls ERNIE-M with ids only: a wrong attention_mask changes nothing; masked mode uses it."""
    rng = np.random.RandomState(3)
    batch, _, _ = random_batch(rng)
    wrong = dict(batch, attention_mask=np.ones_like(batch["attention_mask"]))
    with paddle.no_grad():
        base = make_net("baseline")
        assert np.array_equal(base(**T(batch)).numpy(), base(**T(wrong)).numpy())
        masked = make_net("masked")
        assert not np.allclose(masked(**T(batch)).numpy(), masked(**T(wrong)).numpy())


def test_masked_mode_is_invariant_to_padding():
    """Extra padded caption slots, image slots and token positions do not change masked-mode logits."""
    rng = np.random.RandomState(4)
    net = make_net("masked")
    batch, n_caps, n_imgs = random_batch(rng, b=2, nc=2, ni=2, seq_len=10)
    padded = dict(batch)
    padded["input_ids"] = np.pad(batch["input_ids"], ((0, 0), (0, 5)))
    padded["attention_mask"] = np.pad(batch["attention_mask"], ((0, 0), (0, 5)))
    padded["caption_ids"] = np.pad(batch["caption_ids"], ((0, 0), (0, 2), (0, 5)))
    padded["caption_mask"] = np.pad(batch["caption_mask"], ((0, 0), (0, 2), (0, 5)))
    padded["evidence_images"] = np.pad(batch["evidence_images"], ((0, 0), (0, 3), (0, 0), (0, 0), (0, 0)))
    padded["evidence_mask"] = np.pad(batch["evidence_mask"], ((0, 0), (0, 3)))
    # padded image slots hold noise: masking, not zeros, must keep them out
    padded["evidence_images"][:, 2:] = rng.randn(2, 3, 3, 32, 32)
    with paddle.no_grad():
        a, b = net(**T(batch)).numpy(), net(**T(padded)).numpy()
    assert rel_err(b, a) < 1e-5


@pytest.mark.parametrize("fusion", ["masked", "baseline"])
def test_zero_evidence_items_give_finite_logits(fusion):
    rng = np.random.RandomState(5)
    net = make_net(fusion)
    batch, _, _ = random_batch(rng, b=3, n_caps=np.array([0, 2, 0]), n_imgs=np.array([0, 0, 1]))
    with paddle.no_grad():
        out = net(**T(batch)).numpy()
    assert np.isfinite(out).all()
    if fusion == "masked":  # no evidence: the attention vectors are zeros, so noise in padded slots is ignored
        noisy = dict(batch)
        noise = rng.randn(*batch["evidence_images"].shape).astype("float32")
        empty_slots = (1 - batch["evidence_mask"])[:, :, None, None, None]
        noisy["evidence_images"] = batch["evidence_images"] + noise * empty_slots
        with paddle.no_grad():
            assert rel_err(net(**T(noisy)).numpy(), out) < 1e-5


def test_modalities_ablation_ignores_the_other_modality():
    rng = np.random.RandomState(6)
    batch, _, _ = random_batch(rng)
    other, _, _ = random_batch(np.random.RandomState(7))
    with paddle.no_grad():
        text_only = make_net("masked", modalities=["text"])
        mixed = dict(batch, image=other["image"], evidence_images=other["evidence_images"])
        assert np.allclose(text_only(**T(batch)).numpy(), text_only(**T(mixed)).numpy())
        image_only = make_net("masked", modalities=["image"])
        mixed = dict(batch, input_ids=other["input_ids"], caption_ids=other["caption_ids"])
        assert np.allclose(image_only(**T(batch)).numpy(), image_only(**T(mixed)).numpy())


def test_frozen_bn_keeps_running_stats_while_training():
    rng = np.random.RandomState(8)
    net = make_net("masked")
    net.train()
    bn = net.resnet.resnet[1]
    assert not bn.training and net.classifier1.training
    before = bn._mean.numpy().copy()
    batch, _, _ = random_batch(rng)
    net(**T(batch)).sum().backward()
    assert np.array_equal(before, bn._mean.numpy())
    assert net.resnet.resnet[0].weight.grad is not None  # BN frozen, weights still trained
    unfrozen = make_net("masked", freeze_bn=False)
    unfrozen.train()
    unfrozen(**T(batch))
    assert not np.array_equal(unfrozen.resnet.resnet[1]._mean.numpy(), before)


def test_classifier_width_follows_encoder_widths():
    net = make_net("masked")
    h, c = SMALL_ARCH["ernie"]["hidden_size"], 4 * SMALL_ARCH["resnet"]["widths"][-1]
    assert net.classifier1.weight.shape == [2 * h + 2 * c, SMALL_ARCH["hidden"]]
    assert net.classifier2.weight.shape == [SMALL_ARCH["hidden"], 3]
    with pytest.raises(ValueError, match="fusion"):
        make_net("concat")
    with pytest.raises(ValueError, match="modalities"):
        make_net("masked", modalities=["audio"])


# ---- weights -----------------------------------------------------------------------------------
def test_whole_checkpoint_round_trip(tmp_path):
    rng = np.random.RandomState(9)
    net = make_net("masked", seed=11)
    path = str(tmp_path / "net.pdparams")
    paddle.save(net.state_dict(), path)
    other = make_net("masked", seed=12)
    load_pretrained(other, {"checkpoint": path, "ernie": None, "resnet": None, "strict": True})
    batch, _, _ = random_batch(rng)
    with paddle.no_grad():
        assert np.array_equal(net(**T(batch)).numpy(), other(**T(batch)).numpy())


def test_ernie_and_resnet_weights_by_their_own_names(tmp_path, caplog):
    src = make_net("masked", seed=21)
    # ERNIE-M as PaddleNLP names it (ErnieMModel.state_dict()), under a task-model prefix
    ernie_path = str(tmp_path / "ernie.pdparams")
    paddle.save({f"ernie_m.{k}": v for k, v in src.ernie.state_dict().items()}, ernie_path)
    # ResNet as paddle.vision names it: conv1, bn1, layer1..4 and an ImageNet fc head
    inv = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
    vision = {}
    for k, v in src.resnet.resnet.state_dict().items():
        top, _, rest = k.partition(".")
        vision[f"{inv[top]}.{rest}"] = v
    vision["fc.weight"] = paddle.zeros([256, 1000])
    vision["fc.bias"] = paddle.zeros([1000])
    assert set(map_resnet_state({k: v.numpy() for k, v in vision.items()})[1]) == {"fc.weight", "fc.bias"}
    resnet_path = str(tmp_path / "resnet.pdparams")
    paddle.save(vision, resnet_path)
    dst = make_net("masked", seed=22)
    reports = load_pretrained(dst, {"checkpoint": None, "ernie": ernie_path, "resnet": resnet_path, "strict": True})
    assert reports[1]["ignored"] == ["fc.weight", "fc.bias"]
    for k, v in src.ernie.state_dict().items():
        assert np.array_equal(v.numpy(), dst.ernie.state_dict()[k].numpy()), k
    for k, v in src.resnet.state_dict().items():
        assert np.array_equal(v.numpy(), dst.resnet.state_dict()[k].numpy()), k


def test_weight_problems_are_reported_and_fail_unless_allowed(tmp_path):
    net = make_net("masked")
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    state["classifier2.weight"] = np.zeros((64, 5), "float32")  # shape mismatch
    del state["classifier1.bias"]  # missing
    state["extra.weight"] = np.zeros(3, "float32")  # unexpected
    path = str(tmp_path / "bad.pdparams")
    paddle.save(state, path)
    with pytest.raises(WeightLoadError) as e:
        load_pretrained(make_net("masked"), {"checkpoint": path, "strict": True})
    msg = str(e.value)
    assert "classifier1.bias" in msg and "extra.weight" in msg and "classifier2.weight" in msg
    assert "missing" in msg and "unexpected" in msg and "shape-mismatched" in msg
    other = make_net("masked", seed=5)
    rep = load_pretrained(other, {"checkpoint": path, "strict": False})[0]
    assert rep["missing"] == ["classifier1.bias"] and rep["unexpected"] == ["extra.weight"]
    assert np.array_equal(other.classifier1.weight.numpy(), state["classifier1.weight"])


def test_random_weights_are_announced_loudly(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="paddle_models"):
        load_pretrained(make_net("masked"), {"checkpoint": None, "ernie": None, "resnet": None})
    assert "RANDOM WEIGHTS" in caplog.text and "ERNIE-M and ResNet" in caplog.text


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightLoadError, match="not found"):
        load_pretrained(make_net("masked"), {"ernie": str(tmp_path / "nope.pdparams")})
