"""paddle-models: readable PaddlePaddle reproductions with one engine for train, eval and export."""
from .runtime import tune_cpu

tune_cpu()  # before any model runs: see runtime.py (PADDLE_MODELS_CPU_TUNING=0 skips it)

from .config import AttrDict, ConfigError, load_config  # noqa: E402
from .registry import build_model, get_task, list_models, register_model, register_task  # noqa: E402
from .safe_pickle import UnsafeModelFile  # noqa: E402  (numpy is imported only when a file is opened)

__version__ = "0.1.0"
__all__ = ["AttrDict", "ConfigError", "load_config", "build_model", "get_task", "list_models",
           "register_model", "register_task", "UnsafeModelFile"]
