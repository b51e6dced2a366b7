"""Process-wide CPU tuning, applied once when ``paddle_models`` is imported (before any model runs), and the
per-run setup (device, threads, seeds, ranks) the Trainer and tools call.

The tunings keep what is computed and change how fast it runs:

* ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs: Paddle's bundled MKL (mklml) otherwise takes a generic SSE GEMM
  path on non-Intel CPUs; with it, MKL uses its AVX2 kernels. MKL reads the variable at its first GEMM, so
  it is set at import, only when unset and only on AMD CPUs.
* ``mallopt``: glibc serves every block above 128 KiB with a fresh ``mmap`` and unmaps it on free, so large
  tensors fault their pages in again on every step. Raising the mmap and trim thresholds keeps freed
  blocks for reuse.
* ``FLAGS_use_stride_kernel`` off on CPU-only builds (a user's own setting is kept): Paddle 3's stride
  kernels make ``transpose`` a view, and attention's batched matmuls then run on strided memory, slower on
  CPU; views become copies, as in Paddle 2. Paddle reads the flag from the environment when it is
  imported, so importing ``paddle_models`` only sets the variable (unless paddle is already loaded, in
  which case the flag is set directly).

What is applied depends on the CPU: :func:`cpu_info` reads the vendor and the instruction sets that
decide it (AVX2, AVX-512, AVX512-BF16, AVX512-VNNI, AMX) from ``/proc/cpuinfo`` and :func:`cpu_plan` turns
them into settings, each one measured (the README's speed section names the CPU of every figure):

==========================  ===========================  ==========================================
setting                     AMD (measured: EPYC Zen 4)   Intel (measured: Xeon with AMX, issue 14)
==========================  ===========================  ==========================================
MKL_DEBUG_CPU_TYPE=5        yes (MKL's AVX2 GEMM)         no (MKL already takes AVX-512 / AMX there)
oneDNN kernels in dygraph   no (eval 1.92 s vs 1.52 s)    no (eval 2.01 s vs 1.75 s)
eval on the exported graph  yes (1.14 s vs 1.52 s)        yes (1.27 s vs 1.75 s)
Paddle Inference + oneDNN
bf16 allowed                with AVX512-BF16              with AVX512-BF16 or AMX-BF16 (oneDNN picks AMX)
mallopt, no stride kernels  yes                           yes
==========================  ===========================  ==========================================

``Global.eval_engine: auto`` (the default) reads ``eval_engine`` from the plan. ``PADDLE_MODELS_CPUINFO``
points :func:`cpu_info` at another cpuinfo file (what the tests use to run the other vendor's plan).
Set ``PADDLE_MODELS_CPU_TUNING=0`` to leave the process as it is.
"""
import importlib.metadata
import os
import sys

_APPLIED = {}


_VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}
_ISA = {"avx2": "avx2", "avx512": "avx512f", "avx512_bf16": "avx512_bf16", "avx512_vnni": "avx512_vnni",
        "amx_tile": "amx_tile", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8"}


def cpu_info(text: str = None) -> dict:
    """The CPU this process runs on, from the first processor block of ``/proc/cpuinfo`` (or ``text``; or
    the file named by ``PADDLE_MODELS_CPUINFO``): ``vendor`` ('AMD', 'Intel', or the raw vendor id,
    'unknown' when unreadable), ``model_name``, ``cores`` (logical CPUs this process may use), and one bool
    per instruction set that decides the tuning: ``avx2``, ``avx512``, ``avx512_bf16``, ``avx512_vnni``,
    ``amx_tile``, ``amx_bf16``, ``amx_int8``; ``bf16`` is native bfloat16 (AVX512-BF16 or AMX-BF16)."""
    if text is None:
        path = os.environ.get("PADDLE_MODELS_CPUINFO") or "/proc/cpuinfo"
        try:
            with open(path) as fh:
                text = fh.read(1 << 16)
        except OSError:
            text = ""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor block is enough: all cores of a machine here are alike
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vendor_id = fields.get("vendor_id", "")
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    info = {"vendor": _VENDORS.get(vendor_id, vendor_id or "unknown"), "model_name": fields.get("model name", ""),
            "family": fields.get("cpu family", ""), "model": fields.get("model", ""), "cores": cores}
    info.update({k: flag in flags for k, flag in _ISA.items()})
    info["bf16"] = info["avx512_bf16"] or info["amx_bf16"]
    return info


def cpu_name(info: dict = None) -> str:
    """'AMD EPYC (family 25, model 17)', 'Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz (family 6, model 143)':
    the model name (with the vendor in front when it lacks it) and, since a virtual machine may show a bare
    'AMD EPYC', the family and model numbers that tell the generation. Default: this machine."""
    info = cpu_info() if info is None else info
    name = info.get("model_name", "")
    name = name if name.lower().startswith(info["vendor"].lower()) else f"{info['vendor']} {name}".strip()
    extra = [f"{k} {info[k]}" for k in ("family", "model") if info.get(k)]
    return name + (f" ({', '.join(extra)})" if extra else "")


def cpu_plan(info: dict) -> dict:
    """The settings :func:`tune_cpu` and the tools apply on a CPU described by :func:`cpu_info` (the table
    of the module docstring): ``mkl_avx2`` (set ``MKL_DEBUG_CPU_TYPE=5``), ``onednn_dygraph`` (oneDNN
    kernels in dygraph), ``eval_engine`` (what ``Global.eval_engine: auto`` means on CPU), ``bf16`` (the
    CPU runs oneDNN's bfloat16 natively, so ``Global.precision: bf16`` is allowed) and ``amx`` (oneDNN
    will use AMX tiles for bf16 / int8; nothing to set, reported)."""
    return {"mkl_avx2": info.get("vendor") == "AMD", "onednn_dygraph": False, "eval_engine": "inference",
            "bf16": bool(info.get("bf16")), "amx": bool(info.get("amx_bf16") or info.get("amx_int8"))}


def use_avx2_mkl() -> bool:
    """Set ``MKL_DEBUG_CPU_TYPE=5`` (the plan asks for it on AMD CPUs) when the user has not set it. True if
    this call set it."""
    if os.environ.get("MKL_DEBUG_CPU_TYPE") is not None:
        return False
    os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return True


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds (256 MiB / 512 MiB) so large freed blocks are reused."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 256 << 20)) and bool(libc.mallopt(-1, 512 << 20))  # M_MMAP_, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _gpu_paddle_installed() -> bool:
    """A CUDA build of paddle is installed (its wheels are named paddlepaddle-gpu), found without importing it."""
    try:
        importlib.metadata.distribution("paddlepaddle-gpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def no_stride_kernels_on_cpu() -> bool:
    """Turn ``FLAGS_use_stride_kernel`` off on CPU-only paddle builds, unless the user set it."""
    if "FLAGS_use_stride_kernel" in os.environ:
        return False
    if "paddle" not in sys.modules:
        if _gpu_paddle_installed():
            return False
        os.environ["FLAGS_use_stride_kernel"] = "0"  # read by paddle at import
        return True
    import paddle

    if paddle.is_compiled_with_cuda() or paddle.is_compiled_with_xpu():
        return False
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    return True


def tuning_disabled() -> bool:
    return os.environ.get("PADDLE_MODELS_CPU_TUNING", "1").strip().lower() in ("0", "false", "off", "no")


def tune_cpu() -> dict:
    """Apply this CPU's plan once per process (unless ``PADDLE_MODELS_CPU_TUNING=0``); returns what was done
    (``cpu``: the vendor and model name it was planned for)."""
    if not _APPLIED:
        info = cpu_info()
        if tuning_disabled():
            _APPLIED.update(mkl_avx2=False, mallopt=False, no_stride_kernels=False, disabled=True)
        else:
            plan = cpu_plan(info)
            _APPLIED.update(mkl_avx2=plan["mkl_avx2"] and use_avx2_mkl(), mallopt=keep_freed_memory(),
                            no_stride_kernels=no_stride_kernels_on_cpu(), disabled=False)
        _APPLIED["MKL_DEBUG_CPU_TYPE"] = os.environ.get("MKL_DEBUG_CPU_TYPE")
        _APPLIED["cpu"] = cpu_name(info)
    return dict(_APPLIED)


def default_eval_engine() -> str:
    """What ``Global.eval_engine: auto`` means on CPU: the plan's engine ('dygraph' when tuning is off)."""
    return "dygraph" if tuning_disabled() else cpu_plan(cpu_info())["eval_engine"]


# ---- per-run setup (device, threads, seeds, ranks); paddle is imported only when these are called --------
def world() -> tuple:
    """(rank, world size) of this process (0, 1 outside ``paddle.distributed.launch``)."""
    import paddle

    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def setup_runtime(cfg) -> None:
    """Device, oneDNN switch, CPU threads, seeds, and the distributed environment when launched with
    several ranks, from the ``Global`` section of ``cfg``."""
    import paddle

    global_cfg = cfg["Global"]
    device = global_cfg["device"]
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" or (device == "auto" and has_gpu):
        paddle.set_device("gpu")
    else:
        paddle.set_device("cpu")
    if paddle.get_device() == "cpu":
        on = bool(global_cfg["onednn"])  # Paddle 3 reads FLAGS_use_onednn; FLAGS_use_mkldnn is its old name
        paddle.set_flags({"FLAGS_use_onednn": on, "FLAGS_use_mkldnn": on})
    threads = int(global_cfg["num_threads"]) or (os.cpu_count() or 1)
    rank, world_size = world()
    if world_size > 1 and paddle.get_device() == "cpu":
        threads = max(1, threads // world_size)
    if hasattr(paddle.base.core, "set_num_threads"):
        paddle.base.core.set_num_threads(threads)
    if world_size > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    seed_everything(int(global_cfg["seed"]))


PRECISIONS = ("fp32", "bf16")


def check_precision(cfg) -> str:
    """``Global.precision`` checked against this machine: 'fp32' or 'bf16' (bf16 needs a CPU run with native
    bfloat16, AVX512-BF16 or AMX-BF16; the error names the CPU)."""
    p = str(cfg["Global"].get("precision", "fp32")).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"Global.precision: {p!r} is not one of {', '.join(PRECISIONS)}")
    if p == "bf16":
        import paddle

        if paddle.get_device() != "cpu":
            raise ValueError(f"Global.precision: bf16 is implemented for CPU (oneDNN) in this project; the run is "
                             f"on {paddle.get_device()}: use fp32")
        info = cpu_info()
        if not info["bf16"]:
            raise ValueError(f"Global.precision: bf16 needs a CPU with native bfloat16 (AVX512-BF16 or AMX-BF16); "
                             f"this one ({cpu_name(info)}) has neither: use fp32")
    return p
