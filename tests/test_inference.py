"""paddle_models/inference.py's checks, made before any work: flags, ``-o Data.*`` overrides, output paths."""
import os

import pytest

from paddle_models.inference import InferOptions, check_infer_options, data_overrides, npz_output_path


def test_data_overrides_parse_yaml_values_and_refuse_other_sections():
    assert data_overrides(["Data.max_len=9", "Data.allow_empty_text=true", "Data.files={val: a.json}"]) == \
        {"max_len": 9, "allow_empty_text": True, "files": {"val": "a.json"}}
    with pytest.raises(ValueError, match=r"-o Global.epochs=3: tools/infer.py takes only Data.<key>=<value>"):
        data_overrides(["Global.epochs=3"])
    with pytest.raises(ValueError, match="takes only Data"):
        data_overrides(["Data.a.b=1"])


def test_options_are_checked_before_any_work(tmp_path):
    ok = InferOptions(model_dir=str(tmp_path / "no_export"), input="x.jsonl", out=str(tmp_path / "new" / "p.csv"))
    check_infer_options(ok)  # a missing folder under a writable one is fine: it is created
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        check_infer_options(InferOptions(ok.model_dir, ok.input, ok.out, batch_size=0))
    with pytest.raises(ValueError, match="--precision bf16 is a Paddle Inference setting"):
        check_infer_options(InferOptions(ok.model_dir, ok.input, ok.out, engine="onnxruntime", precision="bf16"))
    (tmp_path / "p.jsonl").mkdir()  # the JSON lines file beside PRED would be a folder
    with pytest.raises(ValueError, match=r"p.jsonl is a folder"):
        check_infer_options(InferOptions(ok.model_dir, ok.input, str(tmp_path / "p.csv")))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        check_infer_options(InferOptions(ok.model_dir, ok.input, str(tmp_path / "file" / "p.csv")))


def test_array_input_writes_a_npz_beside_pred(tmp_path):
    assert npz_output_path("out/pred.csv") == os.path.join("out", "pred.npz")
    assert npz_output_path("out/raw.npz") == "out/raw.npz"
    (tmp_path / "p.jsonl").mkdir()  # only the .npz is written for array input: the folder is no obstacle
    check_infer_options(InferOptions("m", "inputs.npz", str(tmp_path / "p.csv")))
