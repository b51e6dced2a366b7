"""Large data in constant memory: streaming a libfm file of 1M and of 3M rows (fit the feature map, then
one pass over the training split in batches) peaks at about the same RSS."""
import json
import os
import subprocess
import sys

import numpy as np
from conftest import ROOT

CHILD = r'''
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from paddle_models import load_config
from paddle_models.engine.loader import Loader
from paddle_models.rec.data import RecData
cfg = load_config(data={"Arch": {"name": "fm"}, "Global": {"batch_size": 4096},
                        "Data": {"format": "libfm", "path": sys.argv[1], "streaming": True,
                                 "chunk_rows": 65536, "shuffle_buffer": 131072, "split": [0.9, 0.1]}})
rd = RecData(cfg)
rd.prepare()
ds = rd.dataset("train")
rows = 0
for batch in Loader(ds, ds.collate, 4096).batches():
    rows += len(batch["label"])
print(json.dumps({"rows": rows, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def write_libfm(path, n, seed=0):
    """Frappe-like rows: 10 fields, each with its own index range, label 1 / -1."""
    rng = np.random.RandomState(seed)
    sizes = [900, 4000, 7, 7, 2, 3, 2, 9, 80, 200]
    offsets = np.cumsum([0] + sizes[:-1])
    with open(path, "w") as f:
        for start in range(0, n, 200_000):
            m = min(200_000, n - start)
            idx = rng.randint(0, sizes, size=(m, len(sizes))) + offsets
            lab = np.where(rng.rand(m) < 0.33, "1", "-1")
            cols = [lab] + [np.char.add(idx[:, j].astype(str), ":1") for j in range(len(sizes))]
            lines = cols[0]
            for c in cols[1:]:
                lines = np.char.add(np.char.add(lines, " "), c)
            f.write("\n".join(lines.tolist()) + "\n")


def peak(path):
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    p = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ROOT)], capture_output=True, text=True,
                       timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_streaming_memory_does_not_grow_with_the_file(tmp_path):
    small, big = tmp_path / "1m.libfm", tmp_path / "3m.libfm"
    write_libfm(small, 1_000_000)
    write_libfm(big, 3_000_000, seed=1)
    a, b = peak(small), peak(big)
    print(f"\npeak RSS: 1M rows {a['peak_rss_mb']:.0f} MB, 3M rows {b['peak_rss_mb']:.0f} MB "
          f"(file {os.path.getsize(small) / 2**20:.0f} MB and {os.path.getsize(big) / 2**20:.0f} MB)")
    assert 0.85 * 1_000_000 < a["rows"] < 0.95 * 1_000_000 and 0.85 * 3_000_000 < b["rows"] < 0.95 * 3_000_000
    # 2M more rows (~90 MB more text, ~140 MB more as int64 ids) must not show in the peak
    assert b["peak_rss_mb"] < a["peak_rss_mb"] * 1.15 + 20
