"""Config loading: defaults as schema, overrides, and errors that name the key."""
import pytest
from conftest import ROOT

from paddle_models import ConfigError, build_model, list_models, load_config
from paddle_models.config import parse_override

CFG = str(ROOT / "configs" / "multimodal" / "ernie_m_resnet101.yaml")


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_fill_in_and_file_values_win():
    cfg = load_config(CFG)
    assert cfg.Arch.fusion == "baseline" and cfg.Arch.resnet.depth == 101
    assert cfg.Arch.ernie.vocab_size == 250002  # from the family defaults
    assert cfg.Optimizer.lr == 1e-6 and cfg.Global.batch_size == 4
    assert cfg["_family"] == "multimodal"


def test_overrides_parse_yaml_values():
    cfg = load_config(CFG, ["Global.epochs=3", "Arch.modalities=[text]", "Optimizer.lr=1e-3",
                            "Arch.resnet.depth=50", "Global.progress=false"])
    assert cfg.Global.epochs == 3 and cfg.Arch.modalities == ["text"] and cfg.Optimizer.lr == 1e-3
    assert cfg.Arch.resnet.depth == 50 and cfg.Global.progress is False
    assert parse_override("a.b=1e-3") == (["a", "b"], 1e-3)


def test_int_is_accepted_for_float():
    assert load_config(CFG, ["Optimizer.lr=1"]).Optimizer.lr == 1.0


@pytest.mark.parametrize("text, match", [
    ("Arch:\n  name: ernie_m_resnet\nGlobal:\n  epoch: 3\n",
     r"unknown key 'Global.epoch' \(did you mean 'Global.epochs'\?\)"),
    ("Arch:\n  name: ernie_m_resnet\n  resnet:\n    deep: 3\n", r"unknown key 'Arch.resnet.deep'"),
    ("Arch:\n  name: ernie_m_resnet\nGlobal:\n  epochs: two\n", r"Global.epochs: expected int, got str \('two'\)"),
    ("Arch:\n  name: ernie_m_resnet\nGlobal:\n  progress: 1\n", r"Global.progress: expected bool"),
    ("Arch:\n  name: ernie_m_resnet\nArch2: {}\n", r"unknown key 'Arch2'"),
    ("Arch:\n  name: no_such_model\n", r"Arch.name: unknown model 'no_such_model'"),
    ("Global:\n  epochs: 1\n", r"missing required key 'Arch.name'"),
    ("Arch: [1, 2\n", r"not valid YAML"),
])
def test_bad_files_name_the_file_and_key(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(path)
    assert path in str(e.value)


@pytest.mark.parametrize("override, match", [
    ("Global.epohcs=3", r"-o Global.epohcs=3: unknown key 'Global.epohcs' \(did you mean 'Global.epochs'\?\)"),
    ("Global.epochs=3.5", r"-o Global.epochs=3.5: Global.epochs: expected int, got float"),
    ("Arch.modalities=text", r"Arch.modalities: expected a list"),
    ("Globalepochs", r"must look like Section.key=value"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(CFG, [override])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_registry_lists_and_builds():
    assert "ernie_m_resnet" in list_models()
    assert "ernie_m_resnet" in list_models("multimodal")
    with pytest.raises(KeyError, match="unknown model"):
        build_model({"Arch": {"name": "nope"}})
