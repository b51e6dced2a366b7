"""What the project does on each CPU vendor: runtime.cpu_info() (vendor, ISA flags from /proc/cpuinfo),
cpu_plan() (the measured settings per CPU), tune_cpu() run under another vendor's cpuinfo (the machine of a
session is one vendor; PADDLE_MODELS_CPUINFO lets the test run the other one's plan for real), Global.precision
checks and Global.eval_engine: auto. Speed itself is measured by benchmarks/multimodal_step.py, never here."""
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from paddle_models.runtime import check_precision, cpu_info, cpu_plan

# first processor blocks of real machines (flags cut to what matters plus some others)
INTEL_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni \
avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
vendor_id\t: SomethingElse
"""
AMD_ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512_bf16 avx512_vnni avx512bw
"""
INTEL_AVX2 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz
flags\t\t: fpu sse sse2 avx avx2 fma
"""


def test_cpu_info_reads_vendor_and_isa():
    i = cpu_info(INTEL_SPR)
    assert (i["vendor"], i["model_name"]) == ("Intel", "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz")
    assert i["avx512"] and i["avx512_bf16"] and i["avx512_vnni"] and i["amx_bf16"] and i["amx_int8"] and i["bf16"]
    a = cpu_info(AMD_ZEN4)
    assert a["vendor"] == "AMD" and a["avx512"] and a["avx512_bf16"] and a["bf16"]
    assert not (a["amx_bf16"] or a["amx_tile"] or a["amx_int8"])
    old = cpu_info(INTEL_AVX2)
    assert old["avx2"] and not (old["avx512"] or old["bf16"] or old["amx_bf16"])
    assert cpu_info("")["vendor"] == "unknown" and not cpu_info("")["avx2"]
    here = cpu_info()  # this machine: whatever it is, the fields are there and cores is what we may use
    assert here["cores"] >= 1 and set(i) == set(here)


def test_cpu_plan_per_vendor():
    intel, amd, old = (cpu_plan(cpu_info(t)) for t in (INTEL_SPR, AMD_ZEN4, INTEL_AVX2))
    assert amd["mkl_avx2"] and not intel["mkl_avx2"] and not old["mkl_avx2"]  # MKL's own dispatch on Intel
    for p in (intel, amd, old):  # measured on both vendors: oneDNN in dygraph slower, exported graph faster
        assert p["onednn_dygraph"] is False and p["eval_engine"] == "inference"
    assert intel["bf16"] and intel["amx"] and amd["bf16"] and not amd["amx"] and not old["bf16"]


_PROBE = ("import os, json, paddle_models; from paddle_models import runtime; "
          "print(json.dumps({'applied': paddle_models.tune_cpu(), 'mkl': os.environ.get('MKL_DEBUG_CPU_TYPE'), "
          "'engine': runtime.default_eval_engine()}))")


@pytest.mark.parametrize("text,vendor,mkl", [(INTEL_SPR, "Intel", None), (AMD_ZEN4, "AMD", "5")])
def test_tune_cpu_applies_the_plan_of_the_cpu_it_finds(tmp_path, text, vendor, mkl):
    fake = tmp_path / "cpuinfo"
    fake.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "PADDLE_MODELS_CPU_TUNING")}
    env.update(PADDLE_MODELS_CPUINFO=str(fake), GLOG_minloglevel="2")
    p = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["mkl"] == mkl and out["applied"]["mkl_avx2"] is (mkl is not None)
    assert out["applied"]["cpu"].startswith(vendor) and out["engine"] == "inference"
    off = subprocess.run([sys.executable, "-c", _PROBE], env={**env, "PADDLE_MODELS_CPU_TUNING": "0"}, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert json.loads(off.stdout.strip().splitlines()[-1])["engine"] == "dygraph"


def test_precision_checks(tmp_path, monkeypatch):
    assert check_precision({"Global": {"precision": "fp32"}}) == "fp32"
    assert check_precision({"Global": {}}) == "fp32"
    with pytest.raises(ValueError, match=r"Global.precision: 'fp16' is not one of fp32, bf16"):
        check_precision({"Global": {"precision": "fp16"}})
    fake = tmp_path / "cpuinfo"
    fake.write_text(INTEL_AVX2)
    monkeypatch.setenv("PADDLE_MODELS_CPUINFO", str(fake))
    with pytest.raises(ValueError, match=r"bf16 needs a CPU with native bfloat16.*E5-2680 v4.*use fp32"):
        check_precision({"Global": {"precision": "bf16"}})
    fake.write_text(INTEL_SPR)
    assert check_precision({"Global": {"precision": "bf16"}}) == "bf16"
