"""compare_arch: the faithful config matches the printed tree; edited prints are caught by path."""
import json
import subprocess
import sys

import paddle
import pytest
from conftest import ROOT

from paddle_models import archcompare, load_config
from paddle_models.multimodal.network import network_from_config

FIXTURE = ROOT / "paddle_models" / "multimodal" / "fixtures" / "network_printed.txt"
CFG101 = ROOT / "configs" / "multimodal" / "ernie_m_resnet101.yaml"
CFG50 = ROOT / "configs" / "multimodal" / "ernie_m_resnet50.yaml"


def lazy_model(cfg_path):
    cfg = load_config(str(cfg_path))
    with paddle.LazyGuard():
        return network_from_config(cfg["Arch"])


@pytest.fixture(scope="module")
def model101():
    return lazy_model(CFG101)


@pytest.fixture(scope="module")
def printed():
    return FIXTURE.read_text(encoding="utf-8")


def test_faithful_config_matches_the_print(model101, printed):
    res = archcompare.compare_model(model101, printed)
    assert res["differences"] == []
    assert res["parameters"] == 345_567_427
    assert res["expected_nodes"] == res["found_nodes"] == 1 + printed.count("): ")  # root + every named node
    # Paddle 3.3 adds inplace= / scale_grad_by_freq= to reprs: normalized and listed, not hidden
    assert any(n.startswith("Dropout: inplace=False") for n in res["normalized"])
    assert any(n.startswith("Embedding: scale_grad_by_freq=False") for n in res["normalized"])


def test_changed_number_is_reported_at_its_path(model101, printed):
    edited = printed.replace("(classifier1): Linear(in_features=5632, out_features=1024",
                             "(classifier1): Linear(in_features=5632, out_features=1025")
    res = archcompare.compare_model(model101, edited)
    assert [d[0] for d in res["differences"]] == ["classifier1"]
    assert "1025" in res["differences"][0][1] and "1024" in res["differences"][0][2]


def test_removed_block_is_reported_once_at_its_top(model101, printed):
    lines = printed.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "(22): BottleneckBlock(")
    closing = lines[start].replace("(22): BottleneckBlock(", ")")
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == closing)
    edited = "\n".join(lines[:start] + lines[end + 1:])
    res = archcompare.compare_model(model101, edited)
    assert [d[0] for d in res["differences"]] == ["resnet.resnet.6.22"]
    assert res["differences"][0][1] == "absent"  # the live model has a block the print lacks


def test_renamed_layer_is_reported(model101, printed):
    edited = printed.replace("(attention_text): MultiHeadAttention(", "(attention_txt): MultiHeadAttention(")
    paths = [d[0] for d in archcompare.compare_model(model101, edited)["differences"]]
    assert "attention_txt" in paths and "attention_text" in paths


def test_changed_type_is_reported():
    a = "Net(\n  (fc): Linear(in_features=2, out_features=3)\n)"
    b = "Net(\n  (fc): Conv2D(2, 3, kernel_size=[1, 1])\n)"
    diffs, _ = archcompare.compare_trees(archcompare.parse_tree(a), archcompare.parse_tree(b))
    assert diffs == [("fc", "type Linear", "type Conv2D")]


def test_unparseable_print_names_the_line():
    with pytest.raises(ValueError, match="line 2"):
        archcompare.parse_tree("Net(\n  this is not a module line\n)", "x.txt")


def test_tool_exit_codes_and_json(tmp_path, printed):
    cmd = [sys.executable, str(ROOT / "tools" / "compare_arch.py"), "--printed", str(FIXTURE), "--json"]
    ok = subprocess.run(cmd + ["-c", str(CFG101)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    res = json.loads(ok.stdout.strip().splitlines()[-1])
    assert res["differences"] == 0 and res["parameters"] == 345567427 and res["normalized"]
    r50 = subprocess.run(cmd + ["-c", str(CFG50)], capture_output=True, text=True, timeout=300)
    assert r50.returncode == 1
    res50 = json.loads(r50.stdout.strip().splitlines()[-1])
    assert res50["differences"] == 17  # layer3 has 6 blocks in ResNet-50, 23 in the print
    assert all(p.startswith("resnet.resnet.6.") for p in res50["paths"])
    assert "(layer3." in r50.stdout
