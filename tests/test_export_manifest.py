"""Export folders that cannot point elsewhere: every path export.yaml names must resolve inside the folder
(an absolute path elsewhere, ``..``, a symbolic link out are refused naming the key), and export.yaml's
``files`` record of sha256 is checked on load (a changed, missing or added file is refused naming it).
Folders that are symbolic links load as before."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from paddle_models.engine.artifact import ExportFolderError, read_export_meta, version_hash
from paddle_models.engine.predictor import Predictor
from paddle_models.inference import task_for_export

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def fm_export(tmp_path_factory):
    """A small FM (rec) export: graph, weights, example, config and the fitted feature map."""
    import paddle

    from paddle_models.config import load_config
    from paddle_models.engine.export import export_model
    from paddle_models.registry import get_task, model_entry

    out = tmp_path_factory.mktemp("manifest") / "export"
    base = model_entry("fm")["small_config"]
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    data.setdefault("Arch", {})["name"] = "fm"
    data.setdefault("Global", {})["output_dir"] = str(out) + "_run"
    cfg = load_config(data=data)
    task = get_task("rec")(cfg)
    paddle.seed(3)
    model = task.build_model()
    export_model(cfg, str(out), task=task, model=model, onnx=False, threads=1, check_onednn=False)
    return out


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def edit_meta(folder: Path, change) -> None:
    """Rewrite the folder's export.yaml with ``change(meta)`` applied (its files record untouched)."""
    path = folder / "export.yaml"
    meta = yaml.safe_load(path.read_text())
    change(meta)
    path.write_text(yaml.safe_dump(meta, sort_keys=False))


def load_all(folder: Path):
    """What infer.py and serve.py load: export.yaml, the predictor, the serving task and its files."""
    meta = read_export_meta(str(folder))
    Predictor(str(folder), threads=1, onednn="off")
    task_for_export(str(folder), meta).load_serving()


def test_an_export_records_the_sha256_of_each_of_its_files(fm_export):
    meta = yaml.safe_load((fm_export / "export.yaml").read_text())
    on_disk = sorted(str(p.relative_to(fm_export)) for p in fm_export.rglob("*") if p.is_file())
    assert sorted(meta["files"]) == [n for n in on_disk if n != "export.yaml"]
    assert {"model.json", "model.pdiparams", "config.yaml", "example_model.npz"} <= set(meta["files"])
    for name, digest in meta["files"].items():
        assert hashlib.sha256((fm_export / name).read_bytes()).hexdigest() == digest, name
    load_all(fm_export)


def _elsewhere(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    other.mkdir()
    return other


KEY_CHANGES = [  # (key in the message, change to export.yaml given the folder "other" beside the export)
    ("variants.model.model_file", lambda m, other: m["variants"]["model"].update(model_file=str(other / "m.json"))),
    ("variants.model.params_file", lambda m, other: m["variants"]["model"].update(params_file="../other/m.pdiparams")),
    ("variants.model.example", lambda m, other: m["variants"]["model"].update(example="../../etc/passwd")),
    ("config", lambda m, other: m.update(config="/etc/passwd")),
    ("preprocess.feature_map", lambda m, other: m["preprocess"].update(feature_map="../other/feature_map.json")),
]


@pytest.mark.parametrize("key,change", KEY_CHANGES, ids=[k for k, _ in KEY_CHANGES])
def test_a_manifest_path_outside_the_folder_is_refused_naming_its_key(fm_export, tmp_path, key, change):
    folder = copy_of(fm_export, tmp_path / "export")
    other = _elsewhere(tmp_path)
    for name in ("model.json", "model.pdiparams", "feature_map.json"):
        if (fm_export / name).exists():
            shutil.copy(fm_export / name, other / name.replace("model.", "m."))
    edit_meta(folder, lambda meta: change(meta, other))
    with pytest.raises(ExportFolderError, match=rf"export\.yaml: {key}: .* leaves the export folder {folder}"):
        load_all(folder)


def test_a_symbolic_link_out_of_the_folder_is_refused(fm_export, tmp_path):
    folder = copy_of(fm_export, tmp_path / "export")
    outside = _elsewhere(tmp_path) / "weights.pdiparams"
    shutil.move(folder / "model.pdiparams", outside)
    os.symlink(outside, folder / "model.pdiparams")
    with pytest.raises(ExportFolderError, match=r"leaves the export folder .* through a symbolic link"):
        load_all(folder)


def test_a_symlinked_export_folder_loads(fm_export, tmp_path):
    link = tmp_path / "current"
    os.symlink(fm_export, link)
    load_all(link)
    assert version_hash(str(link)) == version_hash(str(fm_export))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.pdiparams", "model.json", "config.yaml", "example_model.npz",
                                  "feature_map.json"])
def test_a_changed_file_is_refused_naming_it(fm_export, tmp_path, name):
    folder = copy_of(fm_export, tmp_path / "export")
    _flip_last_byte(folder / name)
    with pytest.raises(ExportFolderError, match=rf"{folder / name}: its sha256 differs from the one export\.yaml"):
        load_all(folder)


def test_a_missing_or_added_file_is_refused_naming_it(fm_export, tmp_path):
    folder = copy_of(fm_export, tmp_path / "missing")
    os.remove(folder / "example_model.npz")
    with pytest.raises(ExportFolderError, match=r"example_model\.npz: missing from the export folder"):
        load_all(folder)
    folder = copy_of(fm_export, tmp_path / "added")
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.json").write_text("{}")
    with pytest.raises(ExportFolderError, match=r"sub/extra\.json: not a file of this export"):
        load_all(folder)


def test_the_check_is_skipped_for_an_export_without_a_files_record(fm_export, tmp_path):
    """export.yaml written before the record existed: loads as before (the paths are still checked)."""
    folder = copy_of(fm_export, tmp_path / "old")
    edit_meta(folder, lambda meta: meta.pop("files"))
    _flip_last_byte(folder / "example_model.npz")  # unchecked: an older export has no record of it
    read_export_meta(str(folder))
    edit_meta(folder, lambda meta: meta.update(config="../x.yaml"))
    with pytest.raises(ExportFolderError, match="config: '../x.yaml' leaves the export folder"):
        read_export_meta(str(folder))


def test_the_multimodal_tokenizer_path_stays_inside(serve_mm_export, tmp_path):
    src = serve_mm_export["export"]
    folder = copy_of(src, tmp_path / "export")
    load_all(folder)
    shutil.copytree(src / "tokenizer", tmp_path / "other" / "tokenizer")
    edit_meta(folder, lambda meta: meta["preprocess"].update(tokenizer="../other/tokenizer"))
    with pytest.raises(ExportFolderError, match=r"preprocess\.tokenizer: '\.\./other/tokenizer' leaves the export"):
        load_all(folder)
    folder = copy_of(src, tmp_path / "added")
    (folder / "tokenizer" / "added_tokens.json").write_text('{"evil": 5}')
    with pytest.raises(ExportFolderError, match=r"tokenizer/added_tokens\.json: not a file of this export"):
        load_all(folder)


def test_infer_tool_refuses_a_tampered_export_in_one_line(fm_export, tmp_path):
    folder = copy_of(fm_export, tmp_path / "export")
    _flip_last_byte(folder / "model.pdiparams")
    inputs = tmp_path / "in.npz"
    np.savez(inputs, **Predictor(str(fm_export), threads=1, onednn="off").example_inputs())
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), "--model-dir", str(folder), "--input",
                          str(inputs), "--out", str(tmp_path / "pred.npz"), "--threads", "1", "--onednn", "off"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: {folder / 'model.pdiparams'}: its sha256 differs" in res.stderr
    assert not (tmp_path / "pred.npz").exists()
