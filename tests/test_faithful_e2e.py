"""The faithful network end to end on the MR2 sample (slow: about 10 minutes on 2 cores; `pytest -m slow`)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.environ.get("PADDLE_MODELS_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data"),
                    "mr2_sample", "Weibo")


@pytest.mark.slow
def test_faithful_network_trains_evaluates_exports_and_predicts(tmp_path):
    if not os.path.isfile(os.path.join(DATA, "dataset_items_val.json")):
        pytest.skip(f"{DATA} not found (shared MR2 sample absent; set PADDLE_MODELS_DATA)")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "faithful_e2e.py"), "--data", DATA,
                           "--out", str(tmp_path / "e2e"), "--json"], capture_output=True, text=True, timeout=1800,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    train = res["stages"]["train"]["result"]
    assert train["steps"] == 2 and train["data"]["train"]["items"] == 1
    assert res["eval_samples"] == 1
    assert res["parity_max_rel_err"] <= 1e-5
    (row,) = res["infer_rows"]
    assert row["id"] == "0" and set(row["probabilities"]) == {"non-rumor", "rumor", "unverified"}
    assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-4
    if "serve" in res["stages"]:
        assert res["stages"]["serve"]["rows_equal_infer"] is True
