"""Model registry: ``@register_model("name", family=...)`` on a builder ``fn(cfg, **inputs) -> paddle.nn.Layer``.

A model added here is picked up by the parametrized tests over ``list_models()`` without a new test.
Each family (``multimodal``, ``rec``, ``transformer``) also registers one *task* class (see
``paddle_models.engine.task.Task``) that tells the engine how to feed, score and export its models.

A family outside this package is a *plug-in*: a module that registers its task (with its config schema,
``register_task(family, defaults=...)``) and models, named in ``PADDLE_MODELS_PLUGINS`` (comma-separated
module names, importable from ``sys.path``) so every tool loads it.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence

_MODELS: dict[str, dict] = {}
_TASKS: dict[str, Callable] = {}
_TASK_DEFAULTS: dict[str, dict] = {}
_FAMILY_MODULES = ("paddle_models.multimodal", "paddle_models.rec", "paddle_models.transformer")
PLUGINS_ENV = "PADDLE_MODELS_PLUGINS"
_loaded = False


def register_model(name: str, family: str, small_config: dict | None = None,
                   arch_keys: Sequence[str] | None = None):
    """Register a builder ``fn(cfg, **inputs) -> paddle.nn.Layer`` under ``name``. A builder reads no file:
    what it needs besides the config (the rec family's fitted feature layout) comes as arguments from the
    family's ``Task.build_model``.

    ``small_config`` is a partial config (``{"Arch": {...}}``) that makes a tiny instance of the model
    for registry-wide tests; it is merged over the family defaults.

    ``arch_keys``: the ``Arch`` keys of the family's schema that this model takes (besides ``name``), for a
    family whose ``Arch`` section serves several models (rec). Then a config that sets another ``Arch`` key
    is an error naming the key and the model, and a saved config leaves the others out
    (:mod:`paddle_models.config`). None: every key of the section belongs to the model.
    """

    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = {"builder": fn, "family": family, "small_config": small_config or {},
                         "arch_keys": tuple(arch_keys) if arch_keys is not None else None}
        return fn

    return deco


def register_task(family: str, defaults: dict | None = None):
    """Register the family's ``Task`` class. ``defaults`` is the config schema of a plug-in family (the
    sections it adds over ``defaults/common.yaml``, as a dict); built-in families keep theirs in
    ``paddle_models/defaults/<family>.yaml``."""

    def deco(cls):
        _TASKS[family] = cls
        if defaults is not None:
            _TASK_DEFAULTS[family] = defaults
        return cls

    return deco


def task_defaults(family: str) -> dict | None:
    """The config schema a plug-in family registered with its task (None for built-in families)."""
    _ensure_loaded()
    return _TASK_DEFAULTS.get(family)


def _ensure_loaded():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _FAMILY_MODULES:
        importlib.import_module(mod)
    plugins = [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for mod in plugins:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                raise ModuleNotFoundError(f"{PLUGINS_ENV}: plug-in module {mod!r} not found on sys.path") from None
            raise


def list_models(family: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, e in _MODELS.items() if family is None or e["family"] == family)


def model_entry(name: str) -> dict:
    _ensure_loaded()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def model_family(name: str) -> str:
    return model_entry(name)["family"]


def build_model(cfg, **inputs):
    """Build the model named by ``cfg.Arch.name`` (a loaded config, see ``paddle_models.config``); ``inputs``
    are what the family's builders take besides the config (rec: the fitted feature ``layout``)."""
    return model_entry(cfg["Arch"]["name"])["builder"](cfg, **inputs)


def get_task(family: str):
    _ensure_loaded()
    if family not in _TASKS:
        raise KeyError(f"no task registered for family {family!r}; known: {sorted(_TASKS)}")
    return _TASKS[family]
