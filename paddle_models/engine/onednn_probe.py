"""The oneDNN probe: does this exported graph run, and agree, with oneDNN on this machine?

Paddle 3.3.x has a known oneDNN failure on some graphs on CPU (``ConvertPirAttribute2RuntimeAttribute not
support ...`` from the PIR executor, or a hard crash). :func:`probe_onednn` replays inputs (by default the
example saved at export) through the graph with oneDNN on and off in a *subprocess* (the Predictor's
``python -m paddle_models.engine.predictor --probe``), so a crash cannot take the caller down, and accepts
oneDNN when it runs and agrees within ``PROBE_TOL``. Results are cached per graph file for the process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from .artifact import load_npz, read_export_meta, save_npz

PROBE_TOL = 1e-4
_PROBE_CACHE: dict[tuple, dict] = {}


def default_threads(threads: int = 0) -> int:
    """``threads`` when > 0, else every core."""
    return int(threads) if threads and int(threads) > 0 else (os.cpu_count() or 1)


def _probe_command(model_dir: str, variant: str, threads: int, input_files: list[str], out_dir: str) -> list[str]:
    return [sys.executable, "-m", "paddle_models.engine.predictor", "--probe", model_dir, "--variant", variant,
            "--threads", str(threads), "--out", out_dir, "--inputs", *input_files]


def probe_onednn(model_dir: str, variant: str = "model", threads: int = 0, inputs: list | None = None,
                 timeout: float = 900.0, use_cache: bool = True) -> dict:
    """Run ``variant`` with oneDNN on and off in a subprocess on ``inputs`` (default: the saved example).

    Returns ``{"ok", "error", "max_rel_err" (on vs off), "outputs" (oneDNN-on outputs per input batch),
    "seconds"}``; ``ok`` is false when the subprocess fails or crashes, or when oneDNN and the plain CPU
    kernels disagree by more than ``PROBE_TOL``."""
    model_dir = os.path.abspath(model_dir)
    meta = read_export_meta(model_dir)
    entry = meta["variants"][variant]
    model_file = os.path.join(model_dir, entry["model_file"])
    st = os.stat(model_file)
    key = (model_file, st.st_mtime_ns, st.st_size, default_threads(threads))
    if inputs is None and use_cache and key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="onednn_probe_") as tmp:
        if inputs is None:
            files = [os.path.join(model_dir, entry["example"])]
        else:
            files = []
            for i, arrays in enumerate(inputs):
                files.append(os.path.join(tmp, f"in_{i}.npz"))
                save_npz(files[-1], arrays)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("GLOG_minloglevel", "2")
        cmd = _probe_command(model_dir, variant, default_threads(threads), files, tmp)
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            result = {"ok": False, "error": f"the probe did not finish within {timeout:.0f} s", "outputs": None}
        else:
            result = _probe_result(proc, tmp, len(files))
    result["seconds"] = round(time.time() - t0, 3)
    if inputs is None:
        _PROBE_CACHE[key] = result
    return result


def _probe_result(proc, tmp: str, n: int) -> dict:
    if proc.returncode != 0:
        if proc.returncode < 0:
            import signal

            try:
                why = f"the probe process was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                why = f"the probe process died (signal {-proc.returncode})"
        else:
            lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
            tail = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            why = f"the probe exited with status {proc.returncode}: {tail.strip()[:300]}"
        return {"ok": False, "error": why, "outputs": None}
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"the probe printed no result ({(proc.stdout or '')[-200:]!r})",
                "outputs": None}
    outs = []
    for i in range(n):
        z = load_npz(os.path.join(tmp, f"out_{i}.npz"))
        outs.append([z[f"o{j}"] for j in range(len(z))])
    err = float(report["max_rel_err"])
    ok = err <= PROBE_TOL
    return {"ok": ok, "max_rel_err": err, "outputs": outs,
            "error": "" if ok else f"oneDNN and the plain CPU kernels disagree by {err:.3g} relative (> {PROBE_TOL:g})"}
