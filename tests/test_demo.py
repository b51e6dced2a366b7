"""A shortened `make demo`: both modalities pass 0.90 macro-F1, each modality alone stays below 0.75."""
import json
import subprocess
import sys

from conftest import ROOT


def test_shortened_demo_thresholds(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "demo.py"), "--out", str(tmp_path), "--train", "1200", "--val", "150",
           "--epochs", "4", "--test", "150", "--ablations", "--no-progress", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    runs = res["runs"]
    assert runs["text+image"]["val_macro_f1"] >= 0.90, runs
    assert runs["text+image"]["test_macro_f1"] >= 0.90, runs
    assert runs["text only"]["val_macro_f1"] < 0.75, runs
    assert runs["image only"]["val_macro_f1"] < 0.75, runs
    assert res["macro_f1"] == runs["text+image"]["val_macro_f1"] and res["seconds"] > 0
    assert "text+image" in p.stdout and "val macro-F1" in p.stdout  # the summary table
