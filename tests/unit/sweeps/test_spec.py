"""Sweep YAML files: every shipped one loads, and bad ones fail before Ray starts, with one clear line."""

from __future__ import annotations

import pytest

from sweeps.spec import load_sweep
from tests.helpers.paths import PROJECT_ROOT
from trainer.errors import ConfigError

SWEEPS = PROJECT_ROOT / "sweeps"
SHIPPED = sorted(SWEEPS.rglob("*.yaml"))


def test_every_sweep_named_by_the_issue_is_shipped_for_every_paper_dataset():
    names = {p.relative_to(SWEEPS).as_posix() for p in SHIPPED}
    for sweep in ("seq_len", "action_cond", "seq_len_x_action_cond"):
        assert f"{sweep}.yaml" in names
        for dataset in ("3diebench", "cifar100", "tinyimagenet", "stl10_pls"):
            assert f"{dataset}/{sweep}.yaml" in names
    assert "smoke.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(SWEEPS).as_posix())
def test_shipped_sweep_loads_and_every_trial_config_is_valid(path):
    spec = load_sweep(path)
    assert (spec.search_space or spec.variants) and spec.name
    assert spec.base_config_path().is_file()


def test_the_methods_sweep_names_every_method_and_the_floor_on_every_dataset():
    from trainer.methods.catalog import method_names

    names = {p.relative_to(SWEEPS).as_posix() for p in SHIPPED}
    assert {"methods.yaml", "3diebench/methods.yaml", "cifar100/methods.yaml", "tinyimagenet/methods.yaml"} <= names
    spec = load_sweep(SWEEPS / "methods.yaml")
    methods = {o.split("=")[1] for overrides in spec.variants.values() for o in overrides
               if o.startswith("model.method=")}
    assert methods == set(method_names())
    assert spec.variants["untrained"][:2] == ["model.method=seq_jepa", "optim.lr=0"]
    assert "seq_jepa.action_cond=false" in spec.variants["seq_jepa_no_actions"]
    trial = spec.trial_overrides({"variant": "simclr", "train.seed": 1})
    assert trial[-2:] == ["model.method=simclr", "train.seed=1"]
    assert load_sweep(SWEEPS / "3diebench" / "methods.yaml").variants == spec.variants


def test_a_bad_variant_is_one_clear_error():
    with pytest.raises(ConfigError, match="variants.bad: unknown method 'simsiam'"):
        load_sweep(SWEEPS / "methods.yaml", ["variants.bad=[model.method=simsiam]"])
    with pytest.raises(ConfigError, match="variants.bad must be a list of 'key=value' strings"):
        load_sweep(SWEEPS / "methods.yaml", ["variants.bad=[simclr]"])


def test_extends_merges_sections_and_replaces_the_search_space():
    spec = load_sweep(SWEEPS / "3diebench" / "seq_len_x_action_cond.yaml")
    assert spec.name == "3diebench-seq_len_x_action_cond"
    assert set(spec.search_space) == {"model.seq_len", "seq_jepa.action_cond"}
    assert spec.search_space["model.seq_len"].values == [1, 2, 3, 4, 5]
    # null resources keep the recipe's scaling (one GPU worker), the rest comes from the parent file
    assert not any(o.startswith("scaling.") for o in spec.fixed_overrides())
    assert spec.base_config_path().name == "3diebench.yaml"
    assert spec.evaluate.enabled and spec.scheduler.name == "fifo"

    action = load_sweep(SWEEPS / "action_cond.yaml")
    assert set(action.search_space) == {"seq_jepa.action_cond"}


def test_overrides_route_training_keys_to_every_trial_and_others_to_the_sweep(tmp_path):
    spec = load_sweep(SWEEPS / "smoke.yaml", ["train.epochs=3", "name=other", "num_samples=2",
                                              "search_space.optim.lr={loguniform: [1.0e-4, 1.0e-2]}"])
    assert spec.name == "other" and spec.num_samples == 2
    assert "train.epochs=3" in spec.fixed_overrides()
    assert spec.search_space["optim.lr"].kind == "loguniform"
    trial = spec.trial_overrides({"model.seq_len": 2, "seq_jepa.action_cond": False, "optim.lr": 0.001})
    assert trial[-3:] == ["model.seq_len=2", "seq_jepa.action_cond=false", "optim.lr=0.001"]


def test_a_method_s_setting_on_the_command_line_applies_to_every_trial():
    """`seq_jepa.*` is a config section (the methods' sections come from the catalogue), not a sweep key."""
    from trainer.config import load_config

    spec = load_sweep(SWEEPS / "smoke.yaml", ["seq_jepa.action_cond=false", "model.action_cond=false"])
    assert spec.base.overrides[-2:] == ["seq_jepa.action_cond=false", "model.action_cond=false"]  # old name too
    assert load_config(spec.base_config_path(), spec.fixed_overrides()).methods["seq_jepa"].action_cond is False


@pytest.mark.parametrize("overrides, message", [
    (["bogus=1"], "unknown sweep key 'bogus'"),
    (["scheduler.bogus=1"], "unknown sweep key 'scheduler.bogus'"),
    (["search_space.model.nope={grid: [1]}"], "unknown config key 'model.nope'"),
    (["search_space.model.seq_len={grid: [0]}"], "search_space.model.seq_len value 0"),
    (["search_space.model.seq_len=3"], "is not a domain"),
    (["search_space.model.seq_len={normal: [0, 1]}"], "unknown domain 'normal'"),
    (["search_space.optim.lr={uniform: [1, 0]}"], "low < high"),
    (["search_space.optim.lr={loguniform: [0, 1]}"], "needs low > 0"),
    (["search_space.model.seq_len={randint: [1, 2.5]}"], "integers"),
    (["scheduler.name=hyperband"], "scheduler.name' must be one of fifo, asha"),
    (["scheduler.name=asha"], "must be one the trainer reports every epoch"),
    (["scheduler.name=asha", "metric=val/inv/acc_agg", "scheduler.reduction_factor=1"], "reduction_factor > 1"),
    (["scheduler.name=asha", "metric=inv/acc_agg"], "'inv/acc_agg' is now named 'val/inv/acc_agg'"),
    (["metric=equi/r2_enc/rotation"], "'equi/r2_enc/rotation' is now named 'val/equi/r2_enc/rotation'"),
    (["mode=best"], "'mode' must be max or min"),
    (["num_samples=0"], "'num_samples' must be an integer >= 1"),
    (["resources.trial_cpus=0"], "trial_cpus must be > 0"),
    (["evaluate.enabled=false"], "comes from the offline evaluation"),
    (["evaluate.overrides=[model.seq_len=2]"], "cannot override 'model.seq_len' here"),
    (["base.config=nope"], "neither a recipe"),
    (["train.epochs=0"], "train.epochs must be >= 1"),
    (["name=a/b"], "without '/'"),
])
def test_bad_sweep_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_sweep(SWEEPS / "smoke.yaml", overrides)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(broken)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\nname: x\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_sweep(loop)


def test_base_config_path_beside_the_sweep_file(tmp_path):
    (tmp_path / "mine.yaml").write_text("model:\n  encoder: convnet\n")
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: {config: mine.yaml}\nsearch_space:\n  model.seq_len: {grid: [1]}\n")
    assert load_sweep(sweep).base_config_path() == (tmp_path / "mine.yaml").resolve()


def test_the_long_fidelity_sweep_keeps_and_probes_a_checkpoint_every_1200_steps_of_12000():
    from trainer.config import load_config

    spec = load_sweep(SWEEPS / "fidelity_long.yaml")
    assert spec.evaluate.enabled and spec.evaluate.every_checkpoint
    config = load_config(spec.base_config_path(), spec.base.overrides)
    steps = config.train.epochs * config.train.steps_per_epoch
    assert steps == 12_000 and config.train.checkpoint_every_epochs * config.train.steps_per_epoch == 1_200
    assert config.train.keep_checkpoints >= steps // 1_200
    assert {"actions", "no_actions", "vicreg", "untrained"} <= set(spec.variants)
    for arm in ("actions", "no_actions"):
        assert load_config(spec.base_config_path(), spec.base.overrides + spec.variants[arm]).ema.decay == 0.996
