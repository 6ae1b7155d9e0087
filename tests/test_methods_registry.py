"""The method registry, the `method:` config section, and the parameter counts of spec §8.1 / §5."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.config import load_config
from trainer.config.schema import THREE_VIEW_METHODS
from trainer.errors import ConfigError
from trainer.methods import BASELINES, METHOD_NAMES, MethodConfig, build_method, method_class
from trainer.model import build_encoder

# Trainable parameters in millions for ResNet-18 (standard stem, D=512), A=4, P=128 (spec §8.1), and the
# non-trainable EMA target of the BYOL family (spec §5: BYOL +12.49 M).
PAPER_MILLIONS = {"simclr": (20.62, 0.0), "byol": (13.02, 12.49), "vicreg": (20.63, 0.0), "vicreg_traj": (20.63, 0.0),
                  "sen": (25.08, 0.0), "equimod": (14.63, 0.0), "sie": (20.10, 0.0), "cond_byol": (13.28, 12.49)}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_parameter_counts_match_the_paper_for_resnet18(name):
    model = build_method(name, build_encoder("resnet18", 3), action_dim=4, cfg=MethodConfig(), action_proj_dim=128)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    expected_trainable, expected_frozen = PAPER_MILLIONS[name]
    assert round(trainable / 1e6, 2) == expected_trainable
    assert round(frozen / 1e6, 2) == expected_frozen


def test_registry_holds_every_baseline_and_the_names_list_adds_seq_jepa():
    assert sorted(BASELINES) == ["byol", "cond_byol", "equimod", "sen", "sie", "simclr", "vicreg", "vicreg_traj"]
    assert set(METHOD_NAMES) == {*BASELINES, "seq_jepa"} and len(METHOD_NAMES) == len(BASELINES) + 1
    assert all(cls.name == name for name, cls in BASELINES.items())


def test_an_unknown_method_names_every_valid_one():
    with pytest.raises(ConfigError) as err:
        build_method("simsiam", build_encoder("convnet", 1, width=4), 4, MethodConfig())
    assert str(err.value) == ("unknown method 'simsiam'; valid: byol, cond_byol, equimod, sen, seq_jepa, sie, "
                              "simclr, vicreg, vicreg_traj")


def test_seq_jepa_is_not_built_here():
    with pytest.raises(ValueError, match=r"build it with build_model\(config"):
        build_method("seq_jepa", build_encoder("convnet", 1, width=4), 4, MethodConfig())


def test_config_defaults_are_the_papers():
    cfg = MethodConfig()
    assert (cfg.temperature, cfg.inv_coeff, cfg.var_coeff, cfg.cov_coeff) == (0.5, 25.0, 25.0, 1.0)
    assert (cfg.equi_factor, cfg.traj_alpha, cfg.projector_dims) == (1.0, 1.0, None)
    cfg.check()


@pytest.mark.parametrize("field, value, message", [
    ("temperature", 0, "method.temperature must be > 0, got 0"),
    ("var_coeff", -1.0, "method.var_coeff must be >= 0, got -1.0"),
    ("traj_alpha", float("nan"), "method.traj_alpha must be >= 0, got nan"),
    ("projector_dims", [], "method.projector_dims must be null or a non-empty list of widths >= 1, got []"),
    ("projector_dims", [2048, 0], "method.projector_dims must be null or a non-empty list of widths >= 1"),
])
def test_config_check_names_the_bad_key(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        MethodConfig(**{field: value}).check()


def test_projector_dims_set_every_projector_width():
    model = build_method("equimod", build_encoder("convnet", 1, width=4), 4, MethodConfig(projector_dims=[48, 24]))
    assert [m.out_features for m in model.projector_inv if isinstance(m, torch.nn.Linear)] == [48, 24]
    assert [m.out_features for m in model.projector_equi if isinstance(m, torch.nn.Linear)] == [48, 24]


def test_the_config_schema_and_its_method_section_import_without_torch():
    """A bad config is reported before anything heavy is imported."""
    code = ("import sys; from trainer.config import MethodConfig, METHOD_NAMES, load_config; MethodConfig().check(); "
            "load_config(None, ['model.method=simclr']); assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)


def test_an_unknown_model_method_is_one_config_error_listing_the_valid_ones():
    valid = "byol, cond_byol, equimod, sen, seq_jepa, sie, simclr, vicreg, vicreg_traj"
    with pytest.raises(ConfigError, match=rf"unknown method 'simsiam' \(model.method\); valid: {valid}$"):
        load_config(None, ["model.method=simsiam"])


def test_three_view_methods_need_two_observed_views_before_anything_starts():
    with pytest.raises(ConfigError, match="model.method=vicreg_traj trains on three consecutive views"):
        load_config(None, ["model.method=vicreg_traj", "model.seq_len=1"])
    assert load_config(None, ["model.method=vicreg_traj", "model.seq_len=2"]).model.method == "vicreg_traj"


def test_the_schema_knows_which_methods_need_three_views():
    assert {name for name in METHOD_NAMES if method_class(name).min_views == 3} == set(THREE_VIEW_METHODS)
