"""The method registry, the `method:` config section, and the parameter counts of spec §8.1 / §5."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.errors import ConfigError
from trainer.methods import METHOD_NAMES, METHODS, MethodConfig, build_method
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
    assert sorted(METHODS) == ["byol", "cond_byol", "equimod", "sen", "sie", "simclr", "vicreg", "vicreg_traj"]
    assert list(METHOD_NAMES) == sorted([*METHODS, "seq_jepa"])
    assert all(cls.name == name for name, cls in METHODS.items())


def test_an_unknown_method_names_every_valid_one():
    with pytest.raises(ConfigError) as err:
        build_method("simsiam", build_encoder("convnet", 1, width=4), 4, MethodConfig())
    assert str(err.value) == ("unknown method 'simsiam'; valid: byol, cond_byol, equimod, sen, seq_jepa, sie, "
                              "simclr, vicreg, vicreg_traj")


def test_seq_jepa_is_not_built_here():
    with pytest.raises(ValueError, match="trainer.model.SeqJEPA"):
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


def test_the_config_section_imports_without_torch():
    code = ("import sys; from trainer.methods import MethodConfig, METHOD_NAMES; MethodConfig().check(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
