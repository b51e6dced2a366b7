"""paddle-models: readable PaddlePaddle reproductions with one engine for train, eval and export."""
from .config import AttrDict, ConfigError, load_config
from .registry import build_model, get_task, list_models, register_model, register_task

__version__ = "0.1.0"
__all__ = ["AttrDict", "ConfigError", "load_config", "build_model", "get_task", "list_models",
           "register_model", "register_task"]
