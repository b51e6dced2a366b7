"""YAML configs in the PaddleClas manner, with ``-o a.b=c`` overrides and strict validation.

A config names its model in ``Arch.name``; the model's family (``multimodal``, ``rec``,
``transformer``) selects the family's default config ``paddle_models/defaults/<family>.yaml``. That
file is the schema: every key is documented there once, a key absent from it is an error, and a value
whose type differs from the default's is an error (ints are accepted where a float is expected; a
default of ``null`` accepts any type; an empty mapping ``{}`` accepts any keys).
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Iterable, Optional

import yaml

DEFAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


class AttrDict(dict):
    """A dict whose keys are also attributes (``cfg.Global.epochs``)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __deepcopy__(self, memo):
        return AttrDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return _plain(self)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def _attr(x):
    if isinstance(x, dict):
        return AttrDict({k: _attr(v) for k, v in x.items()})
    if isinstance(x, list):
        return [_attr(v) for v in x]
    return x


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str):
    """``"a.b=c"`` -> (["a", "b"], value), the value parsed as YAML (``[text, image]``, ``1e-3``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"-o {text}: an override must look like Section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"-o {text}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-3 as a string (no dot); accept it as a float.
    if isinstance(value, str):
        try:
            if any(c in value for c in "eE.") and value.strip().lower() not in ("inf", "nan"):
                value = float(value)
        except ValueError:
            pass
    return key.split("."), value


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _check(default: Any, value: Any, where: str, origin: str):
    """Validate ``value`` against ``default`` (the schema); return the value to store."""
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: {where}: expected a mapping, got {_type_name(value)} ({value!r})")
        if not default:  # open mapping
            return copy.deepcopy(value)
        out = {}
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            if k not in default:
                close = difflib.get_close_matches(str(k), [str(x) for x in default], n=1)
                hint = f" (did you mean '{(where + '.') if where else ''}{close[0]}'?)" if close else ""
                raise ConfigError(f"{origin}: unknown key '{path}'{hint}")
            out[k] = _check(default[k], v, path, origin)
        return out
    if default is None or value is None and default is None:
        return copy.deepcopy(value)
    if value is None:
        raise ConfigError(f"{origin}: {where}: expected {_type_name(default)}, got null")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {where}: expected bool (true/false), got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: {where}: expected int, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: {where}: expected float, got {_type_name(value)} ({value!r})")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: {where}: expected str, got {_type_name(value)} ({value!r})")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: {where}: expected a list, got {_type_name(value)} ({value!r})")
        return copy.deepcopy(value)
    return copy.deepcopy(value)


def _merge(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and out.get(k):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def family_defaults(family: str) -> dict:
    """The family's schema: ``defaults/common.yaml`` (Global, Optimizer) merged with ``defaults/<family>.yaml``,
    or with the schema a plug-in family registered with its task."""
    from .registry import task_defaults

    common = _read_yaml(os.path.join(DEFAULTS_DIR, "common.yaml"))
    path = os.path.join(DEFAULTS_DIR, f"{family}.yaml")
    if os.path.isfile(path):
        own = _read_yaml(path)
    else:
        own = task_defaults(family)
        if own is None:
            raise ConfigError(f"family {family!r}: no config schema ({path} is absent and its task registered "
                              f"no defaults)")
    return _merge(common, copy.deepcopy(own))


def load_config(path: Optional[str] = None, overrides: Iterable[str] = (), data: Optional[dict] = None) -> AttrDict:
    """Load ``path`` (or a ready ``data`` dict), apply ``overrides`` and validate against the family defaults."""
    from .registry import model_entry

    origin = path or "<config>"
    raw = _read_yaml(path) if path is not None else copy.deepcopy(data or {})
    parsed = [(o, *parse_override(o)) for o in overrides]
    # Arch.name may itself be overridden; find it first.
    name = (raw.get("Arch") or {}).get("name") if isinstance(raw.get("Arch"), dict) else None
    for text, keys, value in parsed:
        if keys == ["Arch", "name"]:
            name = value
    if not name:
        raise ConfigError(f"{origin}: missing required key 'Arch.name' (the registered model to build)")
    try:
        family = model_entry(name)["family"]
    except KeyError as e:
        raise ConfigError(f"{origin}: Arch.name: {e.args[0]}") from None
    schema = family_defaults(family)
    checked = _check(schema, raw, "", origin)
    cfg = _merge(schema, checked)
    for text, keys, value in parsed:
        node_schema, node = schema, cfg
        for i, k in enumerate(keys):
            where = ".".join(keys[: i + 1])
            if not isinstance(node_schema, dict) or (node_schema and k not in node_schema):
                close = difflib.get_close_matches(k, list(node_schema) if isinstance(node_schema, dict) else [], n=1)
                hint = f" (did you mean '{'.'.join(keys[:i] + [close[0]])}'?)" if close else ""
                raise ConfigError(f"-o {text}: unknown key '{where}'{hint}")
            if i == len(keys) - 1:
                node[k] = _check(node_schema.get(k) if node_schema else None, value, where, f"-o {text}")
            else:
                node_schema = node_schema.get(k, {}) if node_schema else {}
                node = node.setdefault(k, {})
    cfg.setdefault("Global", {})
    out = _attr(cfg)
    out["_family"] = family
    out["_path"] = os.path.abspath(path) if path else None
    return out


def dump_config(cfg: dict, path: str):
    data = {k: v for k, v in _plain(cfg).items() if not k.startswith("_")}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    os.replace(path + ".tmp", path)
