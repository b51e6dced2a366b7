"""YAML configs in the PaddleClas manner, with ``-o a.b=c`` overrides and strict validation.

A config names its model in ``Arch.name``; the model's family (``multimodal``, ``rec``,
``transformer``) selects the family's default config ``paddle_models/defaults/<family>.yaml``. That
file is the schema: every key is documented there once, a key absent from it is an error, and a value
whose type differs from the default's is an error (ints are accepted where a float is expected; a
default of ``null`` accepts any type; an empty mapping ``{}`` accepts any keys). Every float anywhere in a
config must be finite (``.inf``, ``.nan`` are errors naming the key; no key of the schemas takes them).
Numeric keys with a valid range are checked against :data:`RANGES` (``Global.epochs >= 1``,
``Optimizer.lr > 0``...).

YAML files and ``-o`` values are read by :class:`ConfigLoader`, a ``SafeLoader`` that also reads ``2e-3``
(no dot, which YAML 1.1 leaves a string) as a float, so a file and an override read numbers the same way.
"""
from __future__ import annotations

import copy
import difflib
import math
import operator
import os
import re
from collections.abc import Iterable
from typing import Any

import yaml

from .fileio import atomic_write

DEFAULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and the key."""


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose floats also include exponent forms without a dot (``2e-3``, ``1E5``)."""


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                  |[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(stream):
    """Parse YAML text or a file object with :class:`ConfigLoader` (the project's config and metadata reader)."""
    return yaml.load(stream, Loader=ConfigLoader)


#: Valid ranges of numeric keys, by dotted key path: (comparison, bound). A key absent from a family's
#: schema is not checked.
RANGES = {
    "Global.epochs": (">=", 1),
    "Global.max_steps": (">=", 0),
    "Global.batch_size": (">=", 1),
    "Global.eval_batch_size": (">=", 1),
    "Global.accum_steps": (">=", 1),
    "Global.eval_every_steps": (">=", 0),
    "Global.save_every_steps": (">=", 0),
    "Global.keep_last_checkpoints": (">=", 0),
    "Global.log_every_steps": (">=", 1),
    "Global.early_stopping_patience": (">=", 0),
    "Global.num_workers": (">=", 0),
    "Global.num_threads": (">=", 0),
    "Optimizer.lr": (">", 0),
    "Optimizer.weight_decay": (">=", 0),
    "Optimizer.grad_clip": (">=", 0),
    "Optimizer.epsilon": (">", 0),
    "Optimizer.warmup_steps": (">=", 0),
    "Optimizer.warmup_ratio": (">=", 0),
    "Data.limit": (">=", 0),
    "Data.max_len": (">=", 2),
    "Data.tokenizer_vocab_size": (">=", 8),
    # transformer: positions (a token and its EOS/BOS), decoding
    "Arch.max_len": (">=", 2),
    "Decode.beam_size": (">=", 1),
    "Decode.length_penalty": (">=", 0),
    "Decode.max_len_a": (">=", 0),
    "Decode.max_len_b": (">=", 0),
    # rec: reading in chunks, vocabularies, splits
    "Data.chunk_rows": (">=", 1),
    "Data.shuffle_buffer": (">=", 0),
    "Data.min_count": (">=", 1),
    "Data.cross_min_count": (">=", 1),
    "Data.cross_hash_buckets": (">=", 0),
    "Data.history_len": (">=", 0),
    "Data.num_negatives": (">=", 0),
    "Arch.embedding_dim": (">=", 1),
}
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _check_ranges(cfg: dict, origin: str, overridden: dict) -> None:
    """Raise ConfigError for a value outside its :data:`RANGES` entry, naming the key and where it was set
    (the override, else the file)."""
    for key, (op, bound) in RANGES.items():
        node = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or isinstance(node, bool) or not isinstance(node, (int, float)):
            continue
        if isinstance(node, float) and math.isnan(node) or not _OPS[op](node, bound):
            where = f"-o {overridden[key]}" if key in overridden else origin
            raise ConfigError(f"{where}: {key}: must be {op} {bound}, got {node!r}")


def _check_finite(cfg: dict, origin: str, overridden: dict) -> None:
    """Raise ConfigError for a float that is not finite anywhere in ``cfg`` (lists and open mappings too), or
    for a value that contains itself (a YAML alias cycle, ``&a [*a]``), naming the key and where it was set
    (the override, else the file)."""
    stack = [(cfg, "", ())]
    while stack:
        node, path, above = stack.pop()
        key = path.split("[", 1)[0]
        where = f"-o {overridden[key]}" if key in overridden else origin
        if isinstance(node, (dict, list)):
            if id(node) in above:
                raise ConfigError(f"{where}: {path}: the value contains itself (a YAML alias cycle)")
            inner = (*above, id(node))
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, (f"{path}.{k}" if path else str(k)) if isinstance(node, dict) else f"{path}[{k}]", inner)
                         for k, v in items)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{where}: {path}: must be a finite number, got {node!r}")


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
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to read") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str):
    """``"a.b=c"`` -> (["a", "b"], value), the value parsed as YAML by :class:`ConfigLoader` (``[text, image]``,
    ``1e-3``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"-o {text}: an override must look like Section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"-o {text}: bad key {key!r}")
    try:
        value = load_yaml(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
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


def _set_paths(data: dict, origin: str, prefix: str = "") -> dict:
    """``{dotted key path: origin}`` for every key ``data`` (a file's mapping) sets, at every depth."""
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        out[path] = origin
        if isinstance(value, dict):
            out.update(_set_paths(value, origin, path + "."))
    return out


def _apply_override(cfg: dict, schema: dict, text: str, keys: list, value) -> None:
    """Set ``-o text`` (``keys`` = value) in ``cfg``, checked against ``schema``."""
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


def _check_model_keys(name: str, arch_keys, set_paths: dict) -> None:
    """A ``Arch`` key set (in the file or with ``-o``) that model ``name`` does not take is a ConfigError
    naming where it was set, the key and the model (for models registered with ``arch_keys``)."""
    if arch_keys is None:
        return
    for path, origin in set_paths.items():
        section, _, key = path.partition(".")
        if section == "Arch" and key and "." not in key and key != "name" and key not in arch_keys:
            raise ConfigError(f"{origin}: {path}: not a parameter of {name} (its parameters: {', '.join(arch_keys)})")


def _drop_saved_defaults(raw: dict, arch_keys, arch_schema: dict) -> None:
    """For a config this project saved (``saved=True``): drop the ``Arch`` keys the model does not take that
    hold the schema's default. Checkpoints and export folders written before a model declared its keys
    carry every key of the family's schema; such a key changes nothing. A non-default one stays an error."""
    arch = raw.get("Arch")
    if arch_keys is None or not isinstance(arch, dict):
        return
    for key in [k for k in arch if k != "name" and k not in arch_keys]:
        if key in arch_schema and arch[key] == arch_schema[key]:
            del arch[key]


def load_config(path: str | None = None, overrides: Iterable[str] = (), data: dict | None = None,
                saved: bool = False) -> AttrDict:
    """Load ``path`` (or a ready ``data`` dict), apply ``overrides`` and validate against the family defaults.
    ``saved``: the file is a config.yaml this project wrote (an export folder's, a run's); see
    :func:`_drop_saved_defaults`."""
    from .registry import model_entry

    origin = path or "<config>"
    raw = _read_yaml(path) if path is not None else copy.deepcopy(data or {})
    parsed = [(o, *parse_override(o)) for o in overrides]
    # Arch.name may itself be overridden; find it first.
    name = (raw.get("Arch") or {}).get("name") if isinstance(raw.get("Arch"), dict) else None
    name_origin = origin
    for text, keys, value in parsed:
        if keys == ["Arch", "name"]:
            name, name_origin = value, f"-o {text}"
    if not name:
        raise ConfigError(f"{origin}: missing required key 'Arch.name' (the registered model to build)")
    if not isinstance(name, str):
        raise ConfigError(f"{name_origin}: Arch.name: expected the name of a registered model, got "
                          f"{_type_name(name)} ({name!r})")
    try:
        entry = model_entry(name)
    except KeyError as e:
        raise ConfigError(f"{name_origin}: Arch.name: {e.args[0]}") from None
    family = entry["family"]
    schema = family_defaults(family)
    if saved:
        _drop_saved_defaults(raw, entry["arch_keys"], schema.get("Arch", {}))
    checked = _check(schema, raw, "", origin)
    cfg = _merge(schema, checked)
    set_paths = _set_paths(checked, origin)
    for text, keys, value in parsed:
        _apply_override(cfg, schema, text, keys, value)
        set_paths[".".join(keys)] = f"-o {text}"
    _check_model_keys(name, entry["arch_keys"], set_paths)
    cfg.setdefault("Global", {})
    overridden = {".".join(keys): text for text, keys, _ in parsed}
    _check_finite(cfg, origin, overridden)
    _check_ranges(cfg, origin, overridden)
    out = _attr(cfg)
    out["_family"] = family
    out["_path"] = os.path.abspath(path) if path else None
    return out


def saved_form(cfg: dict) -> dict:
    """``cfg`` as a config file: without the loader's ``_`` keys and, for a model registered with
    ``arch_keys``, without the ``Arch`` keys it does not take (they hold the schema's defaults), so the file
    loads again."""
    from .registry import model_entry

    data = {k: v for k, v in _plain(cfg).items() if not k.startswith("_")}
    arch = data.get("Arch")
    if isinstance(arch, dict) and arch.get("name"):
        arch_keys = model_entry(arch["name"])["arch_keys"]
        if arch_keys is not None:
            data["Arch"] = {k: v for k, v in arch.items() if k == "name" or k in arch_keys}
    return data


def dump_config(cfg: dict, path: str):
    """Write ``cfg`` as YAML (:func:`saved_form`) to ``path``, atomically."""
    with atomic_write(path) as f:
        yaml.safe_dump(saved_form(cfg), f, sort_keys=False, allow_unicode=True)
