"""Weights from the PyTorch ecosystem: PyTorch files read without torch and without running code, the
conversions (torchvision ResNet, Hugging Face ERNIE-M, the PyTorch twin), direct loading through
``Arch.pretrained``, and the numbers against torchvision's ResNet, transformers' ErnieMModel and the twin.

The first part crafts PyTorch zip archives by hand (the pickle opcodes ``torch.save`` writes), so it needs no
torch. The second part runs ``benchmarks/torch_weights.py`` (and ``torch.load``) under a Python with torch,
torchvision and transformers (``$PADDLE_MODELS_TWIN_PYTHON`` or ``.venv-twin/bin/python``) and skips without one.
"""
import builtins
import json
import os
import pickle
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from paddle_models.multimodal import convert, torch_parity
from paddle_models.safe_pickle import UnsafeModelFile, load_torch, safe_load
from paddle_models.safetensors_io import load_safetensors, save_safetensors


# ---- PyTorch archives written opcode by opcode ---------------------------------------------------------
def _global(module, name):
    return f"c{module}\n{name}\n".encode()


def _text(value):
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _ordered_dict(*pairs):
    body = b"(" + b"".join(k + v for k, v in pairs) + b"u" if pairs else b""
    return _global("collections", "OrderedDict") + b")R" + body


def _tensor(storage, key, numel, offset, size, stride, hooks=None):
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, hooks)`` as torch.save pickles it."""
    pid = _tuple(_text("storage"), _global("torch", storage), _text(key), _text("cpu"), _int(numel)) + b"Q"
    args = _tuple(pid, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89",
                  hooks if hooks is not None else _ordered_dict())
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _state_dict(**entries):
    return b"\x80\x02" + _ordered_dict(*[(_text(k), v) for k, v in entries.items()]) + b"."


def write_archive(path, data_pkl, storages=(), byteorder="little", prefix="archive"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in dict(storages).items():
            z.writestr(f"{prefix}/data/{key}", data)
    return str(path)


def _bf16_bytes(values, order):
    import ml_dtypes

    bits = np.asarray(values, dtype=ml_dtypes.bfloat16).view(np.uint16)
    return bits.astype(np.dtype(np.uint16).newbyteorder(order)).tobytes()


def tricky_archive(path, byteorder="little"):
    """Views into one shared storage (a transpose, an offset row), bfloat16, an int64 scalar, bools, a
    Parameter and an empty tensor; returns (path, the arrays torch would give)."""
    order = "<" if byteorder == "little" else ">"
    storages = {"0": np.arange(6, dtype=f"{order}f4").tobytes(), "1": _bf16_bytes([1.5, -2.0, 0.25], order),
                "2": np.array([7], dtype=f"{order}i8").tobytes(), "3": np.array([1, 0, 1], "u1").tobytes(), "4": b""}
    data = _state_dict(
        w=_tensor("FloatStorage", "0", 6, 0, (2, 3), (3, 1)),
        wt=_tensor("FloatStorage", "0", 6, 0, (3, 2), (1, 3)),
        row=_tensor("FloatStorage", "0", 6, 3, (3,), (1,)),
        half=_tensor("BFloat16Storage", "1", 3, 0, (3,), (1,)),
        step=_tensor("LongStorage", "2", 1, 0, (), ()),
        flags=_tensor("BoolStorage", "3", 3, 0, (3,), (1,)),
        param=_global("torch._utils", "_rebuild_parameter") + _tuple(
            _tensor("FloatStorage", "0", 6, 1, (2,), (2,)), b"\x88", _ordered_dict()) + b"R",
        empty=_tensor("FloatStorage", "4", 0, 0, (0, 3), (3, 1)))
    base = np.arange(6, dtype=np.float32)
    want = {"w": base.reshape(2, 3), "wt": base.reshape(2, 3).T, "row": base[3:], "half": np.array([1.5, -2.0, 0.25]),
            "step": np.array(7), "flags": np.array([True, False, True]), "param": base[1:4:2],
            "empty": np.zeros((0, 3), np.float32)}
    return write_archive(path, data, storages, byteorder), want


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_tensors_of_a_torch_archive_read_with_their_offsets_strides_and_dtypes(tmp_path, byteorder):
    path, want = tricky_archive(tmp_path / "tricky.pth", byteorder)
    for got in (load_torch(path), safe_load(path)):
        assert list(got) == list(want)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key].astype(np.float64), value.astype(np.float64), err_msg=key)
            assert got[key].shape == value.shape, key
        assert got["half"].dtype.name == "bfloat16" and got["step"].dtype == np.int64 and got["flags"].dtype == bool


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_archive(path, marker):
    """A PyTorch archive whose data.pkl runs ``touch marker`` when unpickled by torch.load(weights_only=False)."""
    return write_archive(path, pickle.dumps({"conv1.weight": _RunsCommand(str(marker))}, protocol=2))


def test_a_pth_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    from paddle_models.commands import convert_weights
    from paddle_models.multimodal.weights import load_pretrained

    marker = tmp_path / "pwned"
    path = evil_archive(tmp_path / "evil.pth", marker)
    with zipfile.ZipFile(path) as z:
        pickle.loads(z.read("archive/data.pkl"))  # what an unrestricted load does
    assert marker.exists()
    marker.unlink()
    net = torch_parity.build_network("small", "masked")
    attempts = [lambda: load_torch(path), lambda: safe_load(path), lambda: convert.convert_source("resnet", path),
                lambda: convert_weights.main(["--resnet", path, "--out", str(tmp_path / "x.safetensors")])]
    attempts += [lambda key=key: load_pretrained(net, {key: path}) for key in ("resnet", "ernie", "checkpoint")]
    for attempt in attempts:
        with pytest.raises(UnsafeModelFile) as e:
            attempt()
        assert "evil.pth" in str(e.value) and f"{os.system.__module__}.system" in str(e.value), str(e.value)
    assert not marker.exists()
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("data_pkl,error,message", [
    (b"\x80\x02" + _global("torch.nn.modules.linear", "Linear") + b")R.", UnsafeModelFile,
     "the file references torch.nn.modules.linear.Linear"),
    (_state_dict(w=_tensor("FloatStorage", "0", 2, 0, (2,), (1,), hooks=_ordered_dict((_int(1), _int(2))))),
     UnsafeModelFile, "tensor backward hooks"),
    (b"\x80\x02" + _tuple(_text("module"), _text("x")) + b"Q.", UnsafeModelFile,
     "a persistent object id other than a storage"),
    (_state_dict(w=_tensor("ComplexFloatStorage", "0", 2, 0, (2,), (1,))), UnsafeModelFile,
     "the file references torch.ComplexFloatStorage"),
    (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + _tuple(_int(1)) + b"R.", ValueError,
     "rebuilds a tensor with unexpected arguments"),
    (b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + _tuple(*[_int(1)] * 6) + b"R.", UnsafeModelFile,
     "_rebuild_tensor_v2 on something other than a storage"),
])
def test_every_other_global_or_object_is_refused(tmp_path, data_pkl, error, message):
    path = write_archive(tmp_path / "other.pth", data_pkl, {"0": b"\0" * 8})
    with pytest.raises(error) as e:
        load_torch(path)
    assert str(e.value).startswith(path) and message in str(e.value), str(e.value)


def test_broken_archives_and_other_formats_are_clear_errors(tmp_path):
    from paddle_models.multimodal.weights import WeightLoadError, load_pretrained

    cases = {
        "past.pth": (write_archive(tmp_path / "past.pth", _state_dict(w=_tensor("FloatStorage", "0", 2, 1, (2,), (1,))),
                                   {"0": b"\0" * 8}), "reaches element 2 of a storage of 2"),
        "short.pth": (write_archive(tmp_path / "short.pth", _state_dict(w=_tensor("FloatStorage", "0", 4, 0, (2,),
                                                                                    (1,))), {"0": b"\0" * 8}),
                      "has 8 bytes, not the 4 x 4"),
        "lost.pth": (write_archive(tmp_path / "lost.pth", _state_dict(w=_tensor("FloatStorage", "9", 2, 0, (2,),
                                                                                  (1,)))), "archive/data/9 is not"),
    }
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + pickle.dumps({}, protocol=2))
    cases["legacy.pth"] = (str(legacy), "PyTorch's legacy format")
    with zipfile.ZipFile(tmp_path / "script.pt", "w") as z:
        z.writestr("model/constants.pkl", b"")
        z.writestr("model/code/__torch__.py", b"")
    cases["script.pt"] = (str(tmp_path / "script.pt"), "a TorchScript archive")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", b"hello")
    cases["other.zip"] = (str(tmp_path / "other.zip"), "not a PyTorch checkpoint")
    net = torch_parity.build_network("small", "masked")
    for name, (path, message) in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            safe_load(path)
        assert name in str(e.value)
        with pytest.raises(WeightLoadError, match=message):
            load_pretrained(net, {"resnet": path})


def test_bfloat16_safetensors_are_read(tmp_path):
    import ml_dtypes

    half = np.array([[1.5, -2.0], [0.25, 3.0]], dtype=ml_dtypes.bfloat16)
    single = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    header = {"h": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "s": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}, "__metadata__": {"format": "pt"}}
    text = json.dumps(header).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + half.tobytes() + single.tobytes())
    got = load_safetensors(str(path))
    assert got["h"].dtype == half.dtype and np.array_equal(got["h"].astype(np.float32), half.astype(np.float32))
    np.testing.assert_array_equal(got["s"], single)
    assert convert.convert_resnet({"fc.bias": got["h"][0]}, "x").state["fc.bias"].dtype == np.float32
    # written back: the safetensors library reads what save_safetensors streams, big-endian and strided input too
    from safetensors.numpy import load_file

    arrays = {"t": np.arange(12, dtype=">f4").reshape(3, 4).T, "i": np.array([[1, -2]], np.int64),
              "b": np.array([True, False]), "e": np.zeros((0, 2), np.float32)}
    save_safetensors(arrays, str(tmp_path / "out.safetensors"), metadata={"format": "np"})
    for name, value in load_file(str(tmp_path / "out.safetensors")).items():
        assert value.dtype == arrays[name].dtype.newbyteorder("=") and np.array_equal(value, arrays[name]), name
    save_safetensors({"h": half}, str(tmp_path / "half.safetensors"))
    again = load_safetensors(str(tmp_path / "half.safetensors"))["h"]
    assert np.array_equal(again.view(np.uint16), half.view(np.uint16))


def test_conversions_account_for_every_key():
    rng = np.random.RandomState(0)
    with pytest.raises(convert.ConversionError, match=r"resnet.pth: layer1.0.se.weight: not a torchvision ResNet key"):
        convert.convert_resnet({"layer1.0.se.weight": rng.randn(2)}, "resnet.pth")
    with pytest.raises(convert.ConversionError, match=r"hf.bin: encoder.layers.0.adapter.weight: not a Hugging Face"):
        convert.convert_ernie({"encoder.layers.0.adapter.weight": rng.randn(2, 2)}, "hf.bin")
    with pytest.raises(convert.ConversionError, match=r"twin.pth: extra.weight: not a key of the PyTorch twin"):
        convert.convert_twin({"attention_text.in_proj_weight": rng.randn(6, 2), "extra.weight": rng.randn(2)},
                             "twin.pth")
    q = rng.randn(3, 2).astype(np.float32)  # a non-square Linear weight [out, in] -> [in, out]
    done = convert.convert_ernie({"ernie_m.encoder.layers.0.self_attn.self_attn.q_proj.weight": q,
                                  "ernie_m.embeddings.position_ids": np.arange(4), "qa_outputs.bias": q[0]}, "hf",
                                 "ErnieMForQuestionAnswering")
    np.testing.assert_array_equal(done.state["encoder.layers.0.self_attn.q_proj.weight"], q.T)
    assert done.dropped == [("embeddings.position_ids", "a buffer of position indices (PaddleNLP computes them)"),
                            ("qa_outputs.bias", "the task head of ErnieMForQuestionAnswering (not part of "
                                                "ErnieMModel)")]


# ---- against torch, torchvision and transformers -------------------------------------------------------
#: run by the twin Python: torch.load of each file (bfloat16 as its raw bits), for an exact comparison
TORCH_LOAD = r"""
import sys, numpy as np, torch
out = {}
for path in sys.argv[2:]:
    for key, value in torch.load(path, weights_only=True).items():
        value = value.view(torch.int16) if value.dtype == torch.bfloat16 else value
        out[f"{path}::{key}"] = value.detach().numpy()
np.savez(sys.argv[1], **out)
"""
TRICKY = r"""
import sys, collections, torch
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
state = collections.OrderedDict(w=base, wt=base.t(), row=base[1], col=base[:, 2], half=base.to(torch.bfloat16),
                                f16=base[0].half(), step=torch.tensor(5), flags=base[0] > 1,
                                param=torch.nn.Parameter(base[2]), empty=torch.zeros(0, 4))
torch.save(state, sys.argv[1])
"""


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    python = torch_parity.twin_python()
    if python is None:
        pytest.skip(f"no Python with torch, torchvision and transformers (set {torch_parity.TWIN_PYTHON_ENV} or "
                    "build .venv-twin: make bench-twin)")
    d = tmp_path_factory.mktemp("torch_weights")
    torch_parity.make_reference(str(d / "torch"), "small", python, threads=1)
    subprocess.run([python, "-c", TRICKY, str(d / "tricky.pth")], check=True)
    files = [str(d / "torch" / f) for f in ("resnet.pth", "twin.pth", "hf_ernie_bin/pytorch_model.bin",
                                            "hf_task/pytorch_model.bin")] + [str(d / "tricky.pth")]
    subprocess.run([python, "-c", TORCH_LOAD, str(d / "torch_load.npz"), *files], check=True)
    return {"dir": d, "ref": str(d / "torch"), "python": python, "files": files,
            "torch_load": dict(np.load(d / "torch_load.npz"))}


def test_load_torch_reads_what_torch_load_reads(torch_files):
    want = torch_files["torch_load"]
    for path in torch_files["files"]:
        got = load_torch(path)
        keys = [k.split("::", 1)[1] for k in want if k.startswith(f"{path}::")]
        assert list(got) == keys and keys, path
        for key in keys:
            value = got[key].view(np.int16) if got[key].dtype.name == "bfloat16" else got[key]
            reference = want[f"{path}::{key}"]
            assert value.dtype == reference.dtype and value.shape == reference.shape, (path, key)
            np.testing.assert_array_equal(value, reference, err_msg=f"{path}::{key}")


def test_the_tool_converts_and_the_outputs_match_the_reference_implementations(torch_files, capsys):
    from paddle_models.commands import convert_weights

    flags = {"resnet": "--resnet", "ernie": "--ernie", "twin": "--twin"}
    converted = torch_files["dir"] / "paddle"
    for name, (kind, source) in torch_parity.CONVERTED.items():
        assert convert_weights.main([flags[kind], os.path.join(torch_files["ref"], source),
                                     "--out", str(converted / name)]) == 0
    printed = capsys.readouterr().out
    assert f"dropped ({convert.STEP_COUNTER}): bn1.num_batches_tracked" in printed
    assert "the task head of ErnieMForSequenceClassification (not part of ErnieMModel)): classifier.weight" in printed
    errors = torch_parity.compare_converted(torch_files["ref"], str(converted), "small")
    assert set(errors) == {"resnet_features", "resnet_logits", "network_logits_baseline", "network_logits_masked"} | {
        f"ernie_{f}_{o}" for f in ("safetensors", "bin", "task") for o in ("sequence", "pooled")}
    assert max(errors.values()) < torch_parity.REL_TOL, errors
    # the two fusions' logits differ by far more than the tolerance: the whole-network check sees the text path
    _, reference = torch_parity.load_reference(torch_files["ref"])
    assert torch_parity.relative_error(reference["twin_logits_masked"], reference["twin_logits_baseline"]) > \
        100 * torch_parity.REL_TOL


def test_direct_loading_gives_the_same_values_and_the_twins_logits(torch_files):
    result = torch_parity.compare_direct(torch_files["ref"], "small")
    assert result["same_encoders"] == {"resnet_pth": True, "ernie_hf_safetensors": True, "ernie_hf_bin": True,
                                       "ernie_hf_task": True}
    assert max(result["errors"].values()) < torch_parity.REL_TOL, result["errors"]


def test_the_check_sees_a_wrong_conversion(torch_files, monkeypatch, tmp_path):
    """The tolerance is not blind: a conversion that forgets to transpose the query projection fails it."""
    rules = [(pattern, target, transpose and "[qkv]_proj" not in pattern.pattern)
             for pattern, target, transpose in convert._ERNIE_RULES]
    monkeypatch.setattr(convert, "_ERNIE_RULES", rules)
    path = convert.write_safetensors(convert.convert_source("ernie", os.path.join(torch_files["ref"], "hf_ernie_bin"))
                                     .state, str(tmp_path / "wrong.safetensors"))
    inputs, reference = torch_parity.load_reference(torch_files["ref"])
    seq, _ = torch_parity._ernie_outputs(path, dict(torch_parity.network_arch("small", "masked")["ernie"]), inputs)
    assert torch_parity.relative_error(seq, reference["ernie_sequence"]) > 100 * torch_parity.REL_TOL


def test_a_hf_config_that_differs_from_arch_ernie_is_an_error_naming_the_key(torch_files, tmp_path):
    from paddle_models.multimodal.weights import load_pretrained

    folder = tmp_path / "hf"
    shutil.copytree(os.path.join(torch_files["ref"], "hf_ernie_safetensors"), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3, "pad_token_id": 0}))
    with pytest.raises(convert.ConversionError) as e:
        load_pretrained(torch_parity.build_network("small", "masked"), {"ernie": str(folder)})
    assert str(e.value).startswith(f"{folder / 'config.json'}: ")
    assert "num_hidden_layers is 3 but Arch.ernie.num_hidden_layers is 2" in str(e.value)
    assert "pad_token_id is 0 but Arch.ernie.pad_token_id is 1" in str(e.value)
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 100}))
    for attempt in (lambda: convert.convert_source("ernie", str(folder)),
                    lambda: load_pretrained(torch_parity.build_network("small", "masked"), {"ernie": str(folder)})):
        with pytest.raises(convert.ConversionError, match=r"intermediate_size is 100, but PaddleNLP's ErnieMModel "
                                                          r"builds its feed-forward layers 4 x hidden_size = 128 wide"):
            attempt()


def _hf_folder_with_tokenizer(ref, tokenizer_dir, dst):
    """The HF ERNIE-M folder plus a tokenizer laid out like ernie-m-base's ([CLS] 0, [PAD] 1) and transformers'
    tokenizer_config.json."""
    shutil.copytree(os.path.join(ref, "hf_ernie_safetensors"), dst)
    lines = open(os.path.join(tokenizer_dir, "vocab.txt"), encoding="utf-8").read().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    with open(os.path.join(dst, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    for name in ("sentencepiece.bpe.model",):
        shutil.copyfile(os.path.join(tokenizer_dir, name), os.path.join(dst, name))
    with open(os.path.join(dst, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"added_tokens_decoder": {}, "do_lower_case": False, "tokenizer_class": "ErnieMTokenizer",
                   "model_max_length": 1000000000000000019884624838656}, f)
    return str(dst)


def test_one_training_step_on_pytorch_weights_with_the_hf_tokenizer(torch_files, tiny_demo, tmp_path, caplog):
    """``Arch.pretrained.resnet=<resnet.pth>``, ``ernie=<HF folder>`` and ``Data.tokenizer=<the same folder>``:
    the run starts from those weights (no random-weights warning), the HF folder's vocabulary decides the ids."""
    import logging

    from paddle_models import get_task, load_config
    from paddle_models.engine.trainer import Trainer

    hf = _hf_folder_with_tokenizer(torch_files["ref"], str(tiny_demo / "tok"), tmp_path / "hf")
    arch = {**torch_parity.SMALL_ARCH, "name": "ernie_m_resnet", "fusion": "masked",
            "pretrained": {"resnet": os.path.join(torch_files["ref"], "resnet.pth"), "ernie": hf}}
    cfg = load_config(data={
        "Global": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "epochs": 1, "batch_size": 4,
                   "eval_batch_size": 8, "progress": False, "num_threads": 1, "eval_engine": "dygraph"},
        "Arch": arch, "Optimizer": {"lr": 1e-4},
        "Data": {"format": "jsonl", "root": str(tiny_demo / "data"), "tokenizer": hf, "max_len": 16,
                 "image_resize": 32, "image_crop": 32, "max_captions": 1, "max_evidence_images": 1}})
    task = get_task("multimodal")(cfg)
    with caplog.at_level(logging.INFO, logger="paddle_models"):
        result = Trainer(cfg, task).fit()
    assert "RANDOM WEIGHTS" not in caplog.text and result["steps"] == 1
    assert (task.tokenizer.cls_token_id, task.tokenizer.pad_token_id) == (0, 1)
    assert "resnet.pth: 87 key(s) mapped, 17 dropped" in caplog.text
    assert "model.safetensors: 38 key(s) mapped, 0 dropped" in caplog.text


@pytest.mark.slow
def test_full_size_weights_parity_and_a_faithful_training_step(tmp_path, shared_data):
    """ResNet-101 and ernie-m-base (safetensors, pytorch_model.bin, a task model) and the faithful network vs the
    PyTorch references within rel 1e-4, and one faithful training step on the .pth and the HF folder."""
    import sys

    python = torch_parity.twin_python()
    if python is None:
        pytest.skip(f"no Python with torch, torchvision and transformers (set {torch_parity.TWIN_PYTHON_ENV})")
    data = shared_data / "mr2_sample" / "Weibo"
    proc = subprocess.run([sys.executable, "tools/weights_parity.py", "--size", "full", "--train-step", "--data",
                           str(data), "--torch-python", python, "--out", str(tmp_path / "parity"), "--json"],
                          cwd=torch_parity.ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] and max(summary["errors"].values()) < torch_parity.REL_TOL
    assert summary["train_step_random_weights_warning"] is False
    assert all(summary["same_encoders"].values())


def test_builtins_open_is_not_admitted(tmp_path):
    class _Opens:
        def __reduce__(self):
            return builtins.open, (str(tmp_path / "made"), "w")

    path = write_archive(tmp_path / "opens.pth", pickle.dumps({"w": _Opens()}, protocol=2))
    with pytest.raises(UnsafeModelFile, match=r"opens.pth: .*io.open"):
        load_torch(path)
    assert not (tmp_path / "made").exists()
