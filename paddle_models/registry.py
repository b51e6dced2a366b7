"""Model registry: ``@register_model("name", family=...)`` on a builder ``fn(cfg) -> paddle.nn.Layer``.

A model added here is picked up by the parametrized tests over ``list_models()`` without a new test.
Each family (``multimodal``, ``rec``, ``transformer``) also registers one *task* class (see
``paddle_models.engine.task.Task``) that tells the engine how to feed, score and export its models.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Optional

_MODELS: Dict[str, dict] = {}
_TASKS: Dict[str, Callable] = {}
_FAMILY_MODULES = ("paddle_models.multimodal", "paddle_models.rec", "paddle_models.transformer")
_loaded = False


def register_model(name: str, family: str, small_config: Optional[dict] = None):
    """Register a builder under ``name``.

    ``small_config`` is a partial config (``{"Arch": {...}}``) that makes a tiny instance of the model
    for registry-wide tests; it is merged over the family defaults.
    """

    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = {"builder": fn, "family": family, "small_config": small_config or {}}
        return fn

    return deco


def register_task(family: str):
    def deco(cls):
        _TASKS[family] = cls
        return cls

    return deco


def _ensure_loaded():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a family not written yet
            if e.name != mod:
                raise


def list_models(family: Optional[str] = None) -> List[str]:
    _ensure_loaded()
    return sorted(n for n, e in _MODELS.items() if family is None or e["family"] == family)


def model_entry(name: str) -> dict:
    _ensure_loaded()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def model_family(name: str) -> str:
    return model_entry(name)["family"]


def build_model(cfg):
    """Build the model named by ``cfg.Arch.name`` (a loaded config, see ``paddle_models.config``)."""
    return model_entry(cfg["Arch"]["name"])["builder"](cfg)


def get_task(family: str):
    _ensure_loaded()
    if family not in _TASKS:
        raise KeyError(f"no task registered for family {family!r}; known: {sorted(_TASKS)}")
    return _TASKS[family]
