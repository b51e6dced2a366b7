"""Property tests of the config parser and ``-o`` overrides: any override text and any YAML file give a
validated config (every float finite, every key of the schema, ranges kept) or a ConfigError naming where
(the ``-o`` text, or the file); never another exception, never a hang, never a YAML tag that builds an object."""
import itertools
import math

import pytest
import yaml
from conftest import ROOT
from fuzz_settings import DEEP, fuzz
from hypothesis import given
from hypothesis import strategies as st

from paddle_models.config import RANGES, ConfigError, family_defaults, load_config

CFG = str(ROOT / "configs" / "multimodal" / "jsonl_small.yaml")
REC_CFG = str(ROOT / "configs" / "rec" / "deepfm_frappe.yaml")
FAST = fuzz(150)
_names = itertools.count()


def _paths(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _paths(value, path + ".")


KEYS = sorted(set(_paths(family_defaults("multimodal"))))
HOSTILE_VALUES = ["!!python/object/apply:os.system ['touch /tmp/paddle-models-fuzz-canary']", "&a [*a]",
                  "&a {x: *a}", "[" * 200 + "]" * 200, ".inf", "-.inf", ".nan", "1e400", "0x10", "0o17", "~", "",
                  "{a: 1}", "[text, image]", "2e-3", "yes", "!!binary aGVsbG8=", "!!set {a, b}",
                  "!!timestamp 2001-12-14", "'unterminated", "{", "- a\n- b", "\x00", "\ud800", "1_000", "+1", "-0",
                  "12345678901234567890"]


def yaml_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=10))
    nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                               inner, max_size=3),
                          max_leaves=8)
    return nested.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip())


odd_keys = st.sampled_from(["Arch.name", "Global", "a..b", ".x", "Arch.ernie.nope", "Data.files.x"])
overrides = st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=15), odd_keys),
                      st.one_of(st.sampled_from(HOSTILE_VALUES), yaml_values(), st.text(max_size=20)),
                      st.sampled_from(["=", "==", ""]))


def check_config(cfg) -> None:
    """What a config that loaded must hold: finite floats, ranges, the family's schema."""
    stack = [cfg]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float):
            assert math.isfinite(node)
    for key, (op, bound) in RANGES.items():
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            assert {">=": node >= bound, ">": node > bound, "<=": node <= bound, "<": node < bound}[op], key


def load_or_named_error(path, texts):
    try:
        cfg = load_config(path, texts)
    except ConfigError as e:
        message = str(e)
        assert any(message.startswith(f"-o {t}") for t in texts) or message.startswith(path), message
        return None
    check_config(cfg)
    return cfg


def _overrides(items, path):
    texts = [f"{key}{sep}{value}" for key, value, sep in items]
    load_or_named_error(path, texts)


@FAST
@given(st.lists(overrides, min_size=1, max_size=3))
def test_overrides(items):
    _overrides(items, CFG)


@pytest.mark.slow
@DEEP
@given(st.lists(overrides, min_size=1, max_size=4), st.sampled_from([CFG, REC_CFG]))
def test_overrides_deep(items, path):
    _overrides(items, path)


def yaml_files():
    """A config file: the preset's text with lines replaced, or any YAML document."""
    lines = open(CFG, encoding="utf-8").read().splitlines()
    edits = st.lists(st.tuples(st.integers(0, len(lines) - 1), st.one_of(st.sampled_from(HOSTILE_VALUES),
                                                                          st.text(max_size=30))), max_size=3)

    def apply(changes):
        out = list(lines)
        for index, text in changes:
            key = out[index].split(":", 1)[0]
            out[index] = f"{key}: {text}" if ":" in out[index] else text
        return "\n".join(out) + "\n"

    return st.one_of(edits.map(apply), yaml_values(), st.text(max_size=60))


def _file(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / f"fuzz_config_{next(_names)}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    load_or_named_error(str(path), [])


@FAST
@given(yaml_files())
def test_config_files(tmp_path_factory, text):
    _file(tmp_path_factory, text)


@pytest.mark.slow
@DEEP
@given(yaml_files())
def test_config_files_deep(tmp_path_factory, text):
    _file(tmp_path_factory, text)


def test_no_yaml_tag_builds_an_object(tmp_path):
    """A python tag in a file is an error naming the file; in an ``-o`` value, which is not YAML then, it stays
    the text it is (a string key takes it as a string, any other key refuses it): nothing is constructed."""
    import os

    tags = ("!!python/object/apply:os.system ['touch /tmp/paddle-models-fuzz-canary']", "!!python/name:os.system",
            "!!python/object/new:subprocess.Popen [['true']]")
    for value in tags:
        assert load_config(CFG, [f"Global.output_dir={value}"])["Global"]["output_dir"] == value
        with pytest.raises(ConfigError, match=r"^-o Global.epochs=.*: Global.epochs: expected int, got str"):
            load_config(CFG, [f"Global.epochs={value}"])
        path = tmp_path / "tagged.yaml"
        path.write_text(open(CFG, encoding="utf-8").read().replace("epochs: 30", f"epochs: {value}"))
        with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML"):
            load_config(str(path))
    assert not os.path.exists("/tmp/paddle-models-fuzz-canary")
