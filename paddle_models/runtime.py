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

The README's speed section gives the measured effect of each, with the CPU and the command.
Set ``PADDLE_MODELS_CPU_TUNING=0`` to leave the process as it is.
"""
import importlib.metadata
import os
import sys

_APPLIED = {}


def _is_amd() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return "AuthenticAMD" in fh.read(4096)
    except OSError:
        return False


def use_avx2_mkl_on_amd() -> bool:
    """Set ``MKL_DEBUG_CPU_TYPE=5`` on AMD CPUs when the user has not set it. True if this call set it."""
    if os.environ.get("MKL_DEBUG_CPU_TYPE") is not None or not _is_amd():
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


def tune_cpu() -> dict:
    """Apply the three tunings once per process (unless ``PADDLE_MODELS_CPU_TUNING=0``); returns what was done."""
    if not _APPLIED:
        if os.environ.get("PADDLE_MODELS_CPU_TUNING", "1").strip().lower() in ("0", "false", "off", "no"):
            _APPLIED.update(mkl_avx2=False, mallopt=False, no_stride_kernels=False, disabled=True)
        else:
            _APPLIED.update(mkl_avx2=use_avx2_mkl_on_amd(), mallopt=keep_freed_memory(),
                            no_stride_kernels=no_stride_kernels_on_cpu(), disabled=False)
        _APPLIED["MKL_DEBUG_CPU_TYPE"] = os.environ.get("MKL_DEBUG_CPU_TYPE")
    return dict(_APPLIED)


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

    g = cfg["Global"]
    dev = g.get("device", "auto")
    if dev == "gpu" or (dev == "auto" and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        paddle.set_device("gpu")
    else:
        paddle.set_device("cpu")
    if paddle.get_device() == "cpu":
        on = bool(g.get("onednn", False))  # Paddle 3 reads FLAGS_use_onednn; FLAGS_use_mkldnn is its old name
        paddle.set_flags({"FLAGS_use_onednn": on, "FLAGS_use_mkldnn": on})
    threads = int(g.get("num_threads") or 0) or (os.cpu_count() or 1)
    rank, ws = world()
    if ws > 1 and paddle.get_device() == "cpu":
        threads = max(1, threads // ws)
    if hasattr(paddle.base.core, "set_num_threads"):
        paddle.base.core.set_num_threads(threads)
    if ws > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()
    seed_everything(int(g["seed"]))
