"""Building typed dataclasses from YAML trees and dotted `key=value` overrides, with errors that name the key.

`build_dataclass` is the one coercer: the run config uses it for every section, and a sweep file's
sections (`sweeps/spec.py`) use it too. Ints are accepted where floats are expected; anything else
that does not fit its annotation is a `ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from trainer.config import legacy
from trainer.config.schema import Config
from trainer.errors import ConfigError
from trainer.methods.catalog import CATALOG, method_entry, methods_with_ema

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return "a list of " + _type_name(typing.get_args(tp)[0]) + " (e.g. [1, 2, 4])"
    return getattr(tp, "__name__", str(tp))


def _as_float(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def coerce(key: str, value: Any, tp: Any) -> Any:
    """`value` checked against the annotation `tp` (scalars, Optional, Literal, list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, list):
            (item,) = typing.get_args(tp)
            return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    accepted = {
        bool: lambda v: v if isinstance(v, bool) else None,
        int: lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
        float: _as_float,
        str: lambda v: v if isinstance(v, str) else None,
    }.get(tp)
    if accepted is not None and (result := accepted(value)) is not None:
        return result
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key_error(key: str, cls: type, prefix: str, kind: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    section = prefix.rstrip(".") or "top level"
    return ConfigError(f"unknown {kind} key '{prefix}{key}'{hint} (allowed in '{section}': {', '.join(names)})")


def build_dataclass(cls: type, values: Any, prefix: str = "", kind: str = "config"):
    """An instance of the dataclass `cls` from a mapping, nested dataclass fields included; every key is
    checked against the fields (`kind` names the file in the message: config, sweep) and every value
    against its annotation."""
    if not isinstance(values, dict):
        raise ConfigError(f"'{prefix.rstrip('.')}' must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise _unknown_key_error(str(key), cls, prefix, kind)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build_dataclass(tp, value or {}, f"{prefix}{key}.", kind)
        else:
            kwargs[key] = coerce(f"{prefix}{key}", value, tp)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.seq_len=4` -> (['model', 'seq_len'], 4); the value is read as YAML (a bare string if it is not)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. model.seq_len=4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_nested(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{'.'.join(path)}': '{part}' is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml_mapping(path: Path, kind: str = "config file", holds: str = "a mapping of sections") -> dict:
    """A YAML file that must hold a mapping; a missing or malformed file is one ConfigError naming `kind`."""
    if not path.is_file():
        raise ConfigError(f"{kind} not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{kind} {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{kind} {path} must hold {holds}, got {type(tree).__name__}")
    return tree


def read_extended_mapping(path: Path, kind: str, holds: str, recipes: Path | None = None,
                          atomic: tuple[str, ...] = (), seen: tuple[Path, ...] = (),
                          each_file: Callable[[dict], dict] = lambda tree: tree) -> dict:
    """A YAML mapping whose optional top-level `extends:` names the file it starts from (a path relative to it,
    or with `recipes` a bare name there: `extends: default`); mappings merge key by key (but `atomic` keys whole),
    the child's values win. `each_file` rewrites every file's own mapping before the merge."""
    resolved = path.resolve()  # for finding cycles only
    if resolved in seen:
        raise ConfigError(f"{kind} {resolved} extends itself (through {' -> '.join(map(str, seen))})")
    tree = read_yaml_mapping(path, kind=kind, holds=holds)  # errors name the path as given
    parent = tree.pop("extends", None)
    tree = each_file(tree)
    if parent is None:
        return tree
    parent_path = Path(os.path.expanduser(str(parent)))
    if recipes is not None and parent_path.suffix not in (".yaml", ".yml"):
        parent_path = recipes / f"{parent}.yaml"
    parent_tree = read_extended_mapping(path.parent / parent_path, kind, holds, recipes, atomic, (*seen, resolved),
                                        each_file)
    return merge_mappings(parent_tree, tree, atomic)


def merge_mappings(base: dict, top: dict, atomic: tuple[str, ...] = ()) -> dict:
    """`top` over `base`, nested mappings merged key by key (a child changes one field), except `atomic` keys."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in atomic:
            merged[key] = merge_mappings(merged[key], value, atomic)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """YAML file (default: the embedded default; `extends: <recipe>` starts from another) + dotted overrides ->
    validated Config."""
    tree = read_extended_mapping(Path(path) if path else DEFAULT_CONFIG_PATH, "config file",
                                 "a mapping of sections", recipes=DEFAULT_CONFIG_PATH.parent,
                                 each_file=legacy.upgrade_tree)
    return config_from_dict(tree, overrides)


def config_sections() -> tuple[str, ...]:
    """The top-level sections of a config: the fixed ones, then one per method (trainer/methods/catalog.py)."""
    return (*(f.name for f in dataclasses.fields(Config) if f.name != "methods"), *CATALOG)


def config_from_dict(tree: dict, overrides: list[str] = (), allowed_sections: tuple[str, ...] | None = None) -> Config:
    """A Config from `to_dict` output (a checkpoint, a worker's config) plus dotted overrides, checked.

    `allowed_sections` limits which sections the overrides may touch (e.g. what a finished
    checkpoint's evaluation may change without contradicting the trained model). An override of a setting
    that the chosen method does not read is an error (`check_overrides_apply`).
    """
    tree = legacy.upgrade_tree(copy.deepcopy(tree))
    override_paths = []
    for text in overrides:
        key_path, value = parse_override(text)
        key_path = legacy.upgrade_path(key_path)
        if allowed_sections is not None and key_path[0] not in allowed_sections:
            raise ConfigError(f"cannot override '{'.'.join(key_path)}' here; only "
                              f"{', '.join(s + '.*' for s in allowed_sections)} keys can be set")
        set_nested(tree, key_path, value)
        override_paths.append(key_path)
    legacy.resolve_baselines_section(tree, override_paths)
    config = _build_config(tree)
    config.check()
    check_overrides_apply(config, override_paths)
    return config


def _build_config(tree: dict) -> Config:
    """The fixed sections through `build_dataclass`; each method's section into its settings dataclass."""
    sections = config_sections()
    for key in tree:
        if key not in sections:
            close = difflib.get_close_matches(str(key), sections, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config section '{key}'{hint} (sections: {', '.join(sections)})")
    config = build_dataclass(Config, {key: value for key, value in tree.items() if key not in CATALOG})
    for name in CATALOG:
        if name in tree:
            config.methods[name] = build_dataclass(CATALOG[name].settings, tree[name] or {}, f"{name}.")
    return config


def check_overrides_apply(config: Config, override_paths: list[list[str]]) -> None:
    """An override must be read by the chosen method: another method's section, or an `ema.*` key of a method
    without an EMA target (or ema.enabled of one that always has one), is one line naming who reads it.

    Config files may hold several methods' sections (a recipe is a base for any method); what is given as an
    override (the command line, a sweep's overrides, variants and search space) is meant for this run."""
    entry = method_entry(config.model.method)
    for path in override_paths:
        key = ".".join(path)
        if path[0] in CATALOG and path[0] != entry.name:
            raise ConfigError(f"{key} is a setting of method {path[0]}, but model.method={entry.name}; drop it or "
                              f"set model.method={path[0]}")
        if path[0] == "ema" and entry.ema == "none":
            readers = ", ".join(methods_with_ema("always", "switchable"))
            raise ConfigError(f"{key} is read by the methods with an EMA target ({readers}); "
                              f"model.method={entry.name} has none: drop it")
        if path[:2] == ["ema", "enabled"] and entry.ema == "always":
            raise ConfigError(f"ema.enabled is read by {', '.join(methods_with_ema('switchable'))} only: "
                              f"model.method={entry.name} always keeps its EMA target; drop it")


def to_dict(config: Config) -> dict:
    """The config as a tree of sections, the methods' sections at the top level (as a config file has them)."""
    tree = dataclasses.asdict(config)
    methods = tree.pop("methods")
    return {**tree, **methods}


def params_of(config: Config) -> dict[str, Any]:
    """The flattened config that MLflow logs as params: every fixed section and the chosen method's section."""
    tree = to_dict(config)
    return flatten({key: value for key, value in tree.items() if key not in CATALOG or key == config.model.method})


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'seq_len': 3}} -> {'model.seq_len': 3}: the MLflow params."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
