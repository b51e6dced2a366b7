"""Rec hyperparameters live in signatures: every model's constructor names the ``Arch`` keys it takes, its
builder passes exactly those, ``defaults/rec.yaml`` says which models take each key, and a config that sets a
key its model does not take (in the file or with ``-o``) is an error naming where, the key and the model."""
import inspect
import os
import re

import pytest
import yaml

from paddle_models import list_models
from paddle_models.config import ConfigError, _merge, dump_config, load_config
from paddle_models.rec.layers import TASK_ARCH_KEYS
from paddle_models.registry import model_entry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REC_MODELS = list_models("rec")


class RecordingArch(dict):
    """An ``Arch`` section that records the keys read from it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def small_task(name, tmp_path):
    from paddle_models.registry import get_task

    data = _merge(model_entry(name)["small_config"], {"Arch": {"name": name}})
    data = _merge(data, {"Global": {"output_dir": str(tmp_path)}})
    task = get_task("rec")(load_config(data=data))
    task.prepare(str(tmp_path))
    return task


@pytest.mark.parametrize("name", REC_MODELS)
def test_signature_is_what_the_builder_passes(name, tmp_path):
    entry = model_entry(name)
    cls = entry["builder"].model_class
    signature = inspect.signature(cls.__init__)
    hyper = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert hyper, f"{name}: no keyword-only hyperparameters"
    assert all(p.default is inspect.Parameter.empty for p in hyper), f"{name}: a default in Python"
    assert entry["arch_keys"] == tuple(p.name for p in hyper) + TASK_ARCH_KEYS
    task = small_task(name, tmp_path)
    task.cfg["Arch"] = RecordingArch(task.cfg["Arch"])
    model = task.build_model()
    assert type(model) is cls
    read = [k for k in task.cfg["Arch"].read if k != "name"]  # the registry reads the name to find the builder
    assert sorted(read) == sorted(p.name for p in hyper)  # every hyperparameter once, nothing else


def _documented_models(path):
    """{Arch key: set of models its rec.yaml comment names}."""
    out = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^  (\w+):.*?#\s*([a-z0-9 ]+):", line)
        if m:
            models = m.group(2).strip()
            out[m.group(1)] = set(REC_MODELS) if models == "all models" else set(models.split())
    return out


def test_rec_yaml_names_the_models_that_take_each_key():
    path = os.path.join(REPO, "paddle_models", "defaults", "rec.yaml")
    arch = yaml.safe_load(open(path, encoding="utf-8"))["Arch"]
    documented = _documented_models(path)
    for key in arch:
        if key == "name":
            continue
        takers = {n for n in REC_MODELS if key in model_entry(n)["arch_keys"]}
        assert takers, f"Arch.{key}: no model takes it"
        assert documented.get(key) == takers, f"Arch.{key}: rec.yaml names {documented.get(key)}, models {takers}"
    for name in REC_MODELS:  # and every key a model takes is in the schema
        assert set(model_entry(name)["arch_keys"]) <= set(arch), name


def test_a_key_the_model_does_not_take_is_an_error_in_the_file(tmp_path):
    text = open(os.path.join(REPO, "configs", "rec", "deepfm_frappe.yaml"), encoding="utf-8").read()
    path = tmp_path / "deepfm_frappe.yaml"
    path.write_text(text.replace("  name: deepfm\n", "  name: deepfm\n  num_experts: 4\n"))
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: Arch.num_experts: not a parameter of deepfm (its parameters: ")
    assert "hidden_units" in message and "embedding_regularizer" in message and "low_rank" not in message


def test_a_key_the_model_does_not_take_is_an_error_with_o():
    cfg = os.path.join(REPO, "configs", "rec", "deepfm_frappe.yaml")
    with pytest.raises(ConfigError, match=r"^-o Arch.cin_layer_units=\[4\]: Arch.cin_layer_units: not a parameter "
                                          r"of deepfm \(its parameters: embedding_dim, "):
        load_config(cfg, ["Arch.cin_layer_units=[4]"])
    # switching the model with -o: the file's keys are checked against the new model
    with pytest.raises(ConfigError, match=r"deepfm_frappe.yaml: Arch.hidden_units: not a parameter of fm "):
        load_config(cfg, ["Arch.name=fm"])
    # a key the model takes is fine in both places, and so is one that only sets the schema default
    got = load_config(cfg, ["Arch.net_dropout=0.1", "Arch.embedding_init_std=1e-4"])
    assert got["Arch"]["net_dropout"] == 0.1 and got["Arch"]["hidden_units"] == [400, 400, 400]
    # a family without declared Arch keys is unaffected
    assert model_entry("ernie_m_resnet")["arch_keys"] is None


def test_a_saved_config_loads_again_with_the_models_keys_only(tmp_path):
    cfg = load_config(os.path.join(REPO, "configs", "rec", "dcnv2_frappe.yaml"), ["Arch.low_rank=8"])
    path = tmp_path / "config.yaml"
    dump_config(cfg, str(path))
    saved = yaml.safe_load(path.read_text())
    assert set(saved["Arch"]) == {"name", *model_entry("dcnv2")["arch_keys"]}
    again = load_config(str(path))
    assert again["Arch"] == cfg["Arch"] and again["Optimizer"] == cfg["Optimizer"] and again["Data"] == cfg["Data"]


def test_a_saved_config_with_every_schema_key_still_loads(tmp_path):
    """The config.yaml of export folders and runs written before models declared their keys holds every
    Arch key of the schema at its default: loaded as saved, those keys are dropped; a non-default one is not."""
    from paddle_models.config import _plain, family_defaults

    cfg = load_config(os.path.join(REPO, "configs", "rec", "deepfm_frappe.yaml"))
    old = {k: v for k, v in _plain(cfg).items() if not k.startswith("_")}
    old["Arch"] = {**family_defaults("rec")["Arch"], **old["Arch"]}  # every key, as older versions wrote it
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"Arch\.\w+: not a parameter of deepfm"):
        load_config(str(path))
    assert load_config(str(path), saved=True)["Arch"]["hidden_units"] == cfg["Arch"]["hidden_units"]
    old["Arch"]["num_experts"] = 8
    path.write_text(yaml.safe_dump(old), encoding="utf-8")
    with pytest.raises(ConfigError, match="Arch.num_experts: not a parameter of deepfm"):
        load_config(str(path), saved=True)
