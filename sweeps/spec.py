"""A sweep YAML file -> a validated `SweepSpec`, before Ray or MLflow start.

    name: seq_len                        # Tune experiment folder and MLflow parent run name
    extends: ../seq_len.yaml             # optional: start from another sweep file, then merge this one
    base:
      config: default                    # a recipe in trainer/configs/ (default, 3diebench, ...) or a YAML path
      overrides: [train.epochs=2]        # dotted training-config overrides shared by every trial
    search_space:                        # any training-config key -> one domain
      model.seq_len: {grid: [1, 2, 3]}   # grid (every value), choice, uniform, loguniform, randint [lo, hi)
    variants:                            # optional: named sets of overrides, one more grid axis (`variant`)
      simclr: [model.method=simclr]      #   e.g. methods side by side; each crossed with the search space
      untrained: [optim.lr=0]
    metric: eval/inv/acc_agg/M3          # optional: the metric to optimise (or only record, with FIFO)
    mode: max
    scheduler: {name: fifo}              # or {name: asha, grace_period: 1, reduction_factor: 2, max_t: 100}
    num_samples: 1                       # repeats of the grid (each draws new random values)
    max_concurrent_trials: 1
    resources: {num_workers: 2, cpus_per_worker: 1, use_gpu: false, trial_cpus: 0.1}  # default: base's scaling
    evaluate: {enabled: true, overrides: [eval.epochs=30]}   # offline probes after each trial's training
                                         # every_checkpoint: true probes each kept checkpoint at its step
    experiment: seq-jepa-sweeps          # MLflow experiment holding the parent and child runs
    storage_path: ~/seq-jepa/sweeps      # Tune's experiment state and the trials' checkpoints

Every key above except `name` and `search_space` (or `variants`) has a default; an unknown key, a bad domain, or a
search-space key the training config does not have is a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.config import (
    DEFAULT_CONFIG_PATH,
    build_dataclass,
    config_sections,
    load_config,
    read_extended_mapping,
    set_nested,
)
from trainer.errors import ConfigError
from trainer.metric_names import current_name

DOMAINS = ("grid", "choice", "uniform", "loguniform", "randint")
VARIANT = "variant"  # the trial parameter naming a trial's variant (sweep key `variants`)
SCHEDULERS = ("fifo", "asha")
# Metrics the trainer reports while it trains (per epoch; trainer/metric_names.py): the only ones ASHA can stop
# trials on.
ONLINE_METRIC_PREFIXES = ("train/", "val/")
RECIPES_DIR = DEFAULT_CONFIG_PATH.parent  # trainer/configs: `base.config: cifar100` names a file there


@dataclass
class Domain:
    kind: str  # one of DOMAINS
    values: list  # grid/choice: the values; uniform/loguniform/randint: [low, high]

    def corners(self) -> list:
        """Values that stand for the whole domain when validating it against the training config."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)


@dataclass
class Base:
    config: str = "default"
    overrides: list[str] = field(default_factory=list)


@dataclass
class Scheduler:
    name: str = "fifo"
    grace_period: int = 1  # asha: reports (epochs) every trial gets before it can be stopped
    reduction_factor: float = 2.0
    max_t: int = 100  # asha: the most reports (epochs) a trial runs


@dataclass
class Resources:
    """What each trial asks of the cluster; a worker setting left out keeps the base config's `scaling.*`."""

    num_workers: int | None = None  # Ray Train workers per trial (scaling.num_workers)
    cpus_per_worker: float | None = None  # scaling.cpus_per_worker
    use_gpu: bool | None = None  # scaling.use_gpu: one GPU per worker
    trial_cpus: float = 0.1  # the trial's driver, which only waits on its TorchTrainer; must be > 0


@dataclass
class Evaluate:
    enabled: bool = True
    overrides: list[str] = field(default_factory=list)  # eval.*/data.* overrides for the offline probes
    every_checkpoint: bool = False  # every kept checkpoint at its step (learning curves), not the latest alone


@dataclass
class SweepSpec:
    name: str
    search_space: dict[str, Domain]
    variants: dict[str, list[str]] = field(default_factory=dict)  # name -> its overrides (a grid axis)
    base: Base = field(default_factory=Base)
    metric: str | None = None
    mode: str = "max"
    scheduler: Scheduler = field(default_factory=Scheduler)
    num_samples: int = 1
    max_concurrent_trials: int = 1
    resources: Resources = field(default_factory=Resources)
    evaluate: Evaluate = field(default_factory=Evaluate)
    experiment: str = "seq-jepa-sweeps"
    storage_path: str = "~/seq-jepa/sweeps"
    description: str = ""
    source: str = ""  # the file it was read from

    @property
    def folder(self) -> Path:
        """Tune's experiment folder for this sweep (its trials' checkpoints live under it too)."""
        return Path(os.path.expanduser(self.storage_path)).resolve() / self.name

    def base_config_path(self) -> Path:
        """A recipe name -> trainer/configs/NAME.yaml; a relative YAML path is tried beside the sweep file first."""
        path = Path(os.path.expanduser(self.base.config))
        if path.suffix not in (".yaml", ".yml"):
            return RECIPES_DIR / f"{self.base.config}.yaml"
        if not path.is_absolute() and self.source and (Path(self.source).parent / path).is_file():
            return (Path(self.source).parent / path).resolve()
        return path.resolve()

    def fixed_overrides(self) -> list[str]:
        """Training-config overrides every trial shares: the base's, then the sweep's resources."""
        r = self.resources
        scaling = {"num_workers": r.num_workers, "cpus_per_worker": r.cpus_per_worker, "use_gpu": r.use_gpu}
        return [*self.base.overrides, *(f"scaling.{key}={json.dumps(value)}" for key, value in scaling.items()
                                        if value is not None)]

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """The overrides of one trial: the shared ones, its variant's, then its sampled values (JSON is valid YAML)."""
        sampled = {key: value for key, value in params.items() if key != VARIANT}
        return [*self.fixed_overrides(), *self.variants.get(params.get(VARIANT), []),
                *(f"{key}={json.dumps(value)}" for key, value in sampled.items())]

    def to_dict(self) -> dict:
        tree = dataclasses.asdict(self)
        tree["search_space"] = {key: {d.kind: d.values} for key, d in self.search_space.items()}
        tree.pop("source")
        return tree


# ---------------------------------------------------------------------------------------------
# Reading: YAML (with `extends`) -> merged tree -> typed spec -> checked against the training config.


def _section(cls: type, value: Any, key: str):
    """A sweep section (base, scheduler, resources, evaluate) through the run config's own coercion."""
    return build_dataclass(cls, {} if value is None else value, f"{key}.", kind="sweep")


def _domain(key: str, value: Any) -> Domain:
    hint = ("write it as {grid: [...]}, {choice: [...]}, {uniform: [low, high]}, "
            "{loguniform: [low, high]} or {randint: [low, high]}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"search_space.{key} = {value!r} is not a domain; {hint}")
    (kind, values), = value.items()
    if kind not in DOMAINS:
        raise ConfigError(f"search_space.{key}: unknown domain '{kind}'; {hint}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"search_space.{key}.{kind} must be a non-empty list, got {values!r}")
    if kind in ("uniform", "loguniform", "randint"):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if len(values) != 2 or not numeric or not values[0] < values[1]:
            raise ConfigError(f"search_space.{key}.{kind} must be [low, high] with low < high, got {values!r}")
        if kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"search_space.{key}.loguniform needs low > 0, got {values[0]}")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"search_space.{key}.randint takes integers [low, high), got {values!r}")
    return Domain(kind, values)


def _variants(value: Any) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, list) for k, v in value.items()):
        raise ConfigError(f"sweep key 'variants' must map names to lists of 'key=value' overrides, got {value!r}")
    for name, overrides in value.items():
        if not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"variants.{name} must be a list of 'key=value' strings, got {overrides!r}")
    return {str(k): list(v) for k, v in value.items()}


def _scalar(tree: dict, key: str, types: tuple, default: Any, check=lambda v: True, what: str = "") -> Any:
    value = tree.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types or not check(value):
        raise ConfigError(f"sweep key '{key}' must be {what or ' or '.join(t.__name__ for t in types)}, "
                          f"got {value!r}")
    return value


def spec_from_tree(tree: dict, source: str = "") -> SweepSpec:
    allowed = [f.name for f in dataclasses.fields(SweepSpec) if f.name != "source"]
    for key in tree:
        if key not in allowed:
            raise ConfigError(f"unknown sweep key '{key}'; allowed: {', '.join(allowed)} (and extends)")
    name = _scalar(tree, "name", (str,), "", lambda v: v.strip() != "" and "/" not in v,
                   "a non-empty name without '/'")
    space, variants = tree.get("search_space") or {}, _variants(tree.get("variants"))
    if not isinstance(space, dict) or not (space or variants):
        raise ConfigError("sweep key 'search_space' must map at least one training-config key to a domain (or "
                          "'variants' name at least one variant)")
    spec = SweepSpec(
        name=name, search_space={key: _domain(key, value) for key, value in space.items()}, variants=variants,
        base=_section(Base, tree.get("base"), "base"),
        metric=_scalar(tree, "metric", (str,), None),
        mode=_scalar(tree, "mode", (str,), "max", lambda v: v in ("max", "min"), "max or min"),
        scheduler=_section(Scheduler, tree.get("scheduler"), "scheduler"),
        num_samples=_scalar(tree, "num_samples", (int,), 1, lambda v: v >= 1, "an integer >= 1"),
        max_concurrent_trials=_scalar(tree, "max_concurrent_trials", (int,), 1, lambda v: v >= 1, "an integer >= 1"),
        resources=_section(Resources, tree.get("resources"), "resources"),
        evaluate=_section(Evaluate, tree.get("evaluate"), "evaluate"),
        experiment=_scalar(tree, "experiment", (str,), "seq-jepa-sweeps", lambda v: v.strip() != ""),
        storage_path=_scalar(tree, "storage_path", (str,), "~/seq-jepa/sweeps"),
        description=_scalar(tree, "description", (str,), ""),
        source=source)
    _check(spec)
    return spec


def _check(spec: SweepSpec) -> None:
    s, r = spec.scheduler, spec.resources
    if spec.metric is not None and current_name(spec.metric) is not None:
        raise ConfigError(f"sweep key 'metric': {spec.metric!r} is now named {current_name(spec.metric)!r} "
                          "(trainer/metric_names.py); no trial reports the old name")
    if s.name not in SCHEDULERS:
        raise ConfigError(f"sweep key 'scheduler.name' must be one of {', '.join(SCHEDULERS)}, got {s.name!r}")
    if s.name == "asha":
        if spec.metric is None:
            raise ConfigError("scheduler asha needs a 'metric' (and 'mode') to stop trials on")
        if not spec.metric.startswith(ONLINE_METRIC_PREFIXES):
            raise ConfigError(f"scheduler asha stops trials while they train, so its metric must be one the trainer "
                              f"reports every epoch ({', '.join(p + '*' for p in ONLINE_METRIC_PREFIXES)}), "
                              f"not {spec.metric!r}; use scheduler fifo to rank by an eval/* metric")
        if not (s.grace_period >= 1 and s.max_t >= s.grace_period and s.reduction_factor > 1):
            raise ConfigError("scheduler asha needs grace_period >= 1, max_t >= grace_period, reduction_factor > 1")
    if spec.metric is not None and spec.metric.startswith("eval/") and not spec.evaluate.enabled:
        raise ConfigError(f"metric {spec.metric!r} comes from the offline evaluation, but evaluate.enabled is false")
    if not r.trial_cpus > 0:
        raise ConfigError(f"resources.trial_cpus must be > 0 (Ray cannot place a trial that asks for no CPU at all), "
                          f"got {r.trial_cpus!r}")
    for key, section in (("base", spec.base), ("evaluate", spec.evaluate)):
        if not all("=" in o for o in section.overrides):
            raise ConfigError(f"sweep key '{key}.overrides' must be a list of 'key=value' strings, "
                              f"got {section.overrides!r}")


def check_against_config(spec: SweepSpec) -> None:
    """Every trial's training config must be valid: try the base, then each domain's corner values."""
    path = spec.base_config_path()
    if not path.is_file():
        recipes = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"sweep base.config '{spec.base.config}' is neither a recipe ({', '.join(recipes)}) "
                          f"nor a YAML file ({path} does not exist)")
    base = load_config(path, spec.fixed_overrides())
    for variant, overrides in spec.variants.items():
        try:
            load_config(path, [*spec.fixed_overrides(), *overrides])
        except ConfigError as err:
            raise ConfigError(f"variants.{variant}: {err}") from None
    for key, domain in spec.search_space.items():
        for value in domain.corners():
            try:
                load_config(path, spec.trial_overrides({key: value}))
            except ConfigError as err:
                raise ConfigError(f"search_space.{key} value {value!r}: {err}") from None
    if spec.evaluate.enabled:
        from trainer.config import config_from_dict, to_dict
        from trainer.evaluation.offline import OVERRIDABLE

        config_from_dict(to_dict(base), spec.evaluate.overrides, allowed_sections=OVERRIDABLE)


def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepSpec:
    """Read a sweep file, apply `key=value` overrides, validate everything.

    An override of a training-config key (`train.epochs=1`, `data.shards=...`) joins `base.overrides`
    (so it applies to every trial); any other key sets a sweep key (`name=x`, `scheduler.name=asha`,
    `search_space.model.seq_len={grid: [1, 2]}`).
    """
    tree = read_extended_mapping(Path(path), "sweep file", "a mapping", atomic=("search_space",))
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override '{text}' is not key=value")
        if key.split(".")[0] in config_sections():
            base = tree.setdefault("base", {}) or {}
            tree["base"] = {**base, "overrides": [*(base.get("overrides") or []), f"{key}={raw}"]}
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override '{text}': the value is not valid YAML (quote a list of overrides: "
                              "'evaluate.overrides=[\"eval.epochs=5\"]')") from None
        if key.startswith("search_space."):  # the rest is one dotted training-config key
            tree.setdefault("search_space", {})[key[len("search_space."):]] = value
            continue
        set_nested(tree, key.split("."), value)
    spec = spec_from_tree(tree, source=str(Path(path).resolve()))
    check_against_config(spec)
    return spec
