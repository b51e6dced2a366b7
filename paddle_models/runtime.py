"""Process-wide CPU tuning, applied once when ``paddle_models`` is imported (before any model runs).

Three measured problems of Paddle 3.3 on this project's AMD EPYC machines, each fixed without changing what
is computed:

* Paddle's bundled MKL (mklml) takes a generic SSE GEMM path on non-Intel CPUs. ``MKL_DEBUG_CPU_TYPE=5``
  makes it use its AVX2 kernels: a [768,768]x[768,3072] matmul went from 49.5 ms to 18.6 ms on 2 threads,
  the ERNIE-M base encoder from 2.54 s to 1.18 s (``benchmarks/multimodal_step.py``). MKL reads the
  variable at its first GEMM, so it must be set before a model runs; it is set only when unset and only on
  AMD CPUs.
* glibc serves every block above 128 KiB with a fresh ``mmap`` and unmaps it on free, so each large tensor
  faults its pages in again on every step (a 6 MB elementwise op ran 15x slower than its arithmetic).
  ``mallopt`` raises the mmap and trim thresholds so freed blocks are kept and reused.
* Paddle 3's stride kernels make ``transpose`` a view; the attention's batched matmuls, scalings and
  reshapes on those views then run on strided memory, much slower on CPU: ERNIE-M base forward
  1.11 s -> 0.86 s with ``FLAGS_use_stride_kernel`` off (CPU builds only; a user's own setting of the flag
  is kept). Views become copies, as in Paddle 2. Paddle reads the flag from the environment when it is
  imported, so importing ``paddle_models`` does not import paddle (only sets the variable) unless paddle
  is already loaded, in which case the flag is set directly.

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
