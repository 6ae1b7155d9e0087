"""The method catalogue, the methods' config sections, and the parameter counts of the paper's appendix."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from tests.helpers.paths import PROJECT_ROOT
from trainer.config import load_config
from trainer.errors import ConfigError
from trainer.methods.build import build_method, build_model
from trainer.methods.catalog import CATALOG, DEFAULT_METHOD, FAMILIES, SIESettings, VICRegTrajSettings, method_entry
from trainer.model import build_encoder

# Trainable parameters in millions for ResNet-18 (standard stem, D=512), A=4, P=128
# (docs/paper-and-original-code.md#parameter-counts), and the non-trainable EMA target of the BYOL family
# (docs/paper-and-original-code.md#parameter-counts, #baselines: BYOL +12.49 M).
PAPER_MILLIONS = {"simclr": (20.62, 0.0), "byol": (13.02, 12.49), "vicreg": (20.63, 0.0), "vicreg_traj": (20.63, 0.0),
                  "sen": (25.08, 0.0), "equimod": (14.63, 0.0), "sie": (20.10, 0.0), "cond_byol": (13.28, 12.49)}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_parameter_counts_match_the_paper_for_resnet18(name):
    model = build_method(name, build_encoder("resnet18", 3), action_dim=4, action_proj_dim=128)  # default settings
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    expected_trainable, expected_frozen = PAPER_MILLIONS[name]
    assert round(trainable / 1e6, 2) == expected_trainable
    assert round(frozen / 1e6, 2) == expected_frozen


def test_the_catalogue_holds_seq_jepa_and_every_baseline_of_table_1():
    assert sorted(CATALOG) == ["byol", "cond_byol", "equimod", "sen", "seq_jepa", "sie", "simclr", "vicreg",
                               "vicreg_traj"]
    assert DEFAULT_METHOD == "seq_jepa" and all(entry.name == name for name, entry in CATALOG.items())
    assert {name for name, e in CATALOG.items() if e.family == "invariant"} == {"simclr", "byol", "vicreg"}
    assert all(entry.family in FAMILIES for entry in CATALOG.values())


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_each_entry_tells_the_truth_about_its_method(name):
    """views, aggregate and ema as the catalogue says are what the built method does."""
    entry = method_entry(name)
    model = build_method(name, build_encoder("convnet", 1, width=4), 4, action_proj_dim=8)
    assert type(model).__name__ == entry.cls and model.name == name
    assert model.min_views == entry.views and model.has_aggregate == entry.aggregate
    assert (model.aggregate_dim is not None) == entry.aggregate
    assert bool(model.ema_pairs()) == (entry.ema != "none")
    views = torch.randn(4, max(entry.views, 3), 1, 16, 16)
    out = model(views, torch.randn(4, views.shape[1] - 1, 4), torch.randn(4, views.shape[1], 4))
    assert (out.z_agg is not None) == entry.aggregate


def test_ema_enabled_false_leaves_seq_jepa_without_a_target():
    config = load_config(None, ["ema.enabled=false"])
    assert method_entry("seq_jepa").ema == "switchable" and build_model(config, 5, 1).ema_pairs() == []


def test_an_unknown_method_names_every_valid_one():
    with pytest.raises(ConfigError) as err:
        build_method("simsiam", build_encoder("convnet", 1, width=4), 4)
    assert str(err.value) == ("unknown method 'simsiam' (model.method); valid: byol, cond_byol, equimod, sen, "
                              "seq_jepa, sie, simclr, vicreg, vicreg_traj")


def test_seq_jepa_is_built_from_its_section_like_the_baselines():
    model = build_method("seq_jepa", build_encoder("convnet", 1, width=4), 4,
                         method_entry("seq_jepa").settings(num_layers=1, action_cond=False), action_proj_dim=8)
    assert len(model.aggregator.layers) == 1 and not model.action_cond


def test_settings_defaults_are_the_papers():
    assert method_entry("simclr").settings().temperature == 0.5
    vicreg = method_entry("vicreg").settings()
    assert (vicreg.inv_coeff, vicreg.var_coeff, vicreg.cov_coeff) == (25.0, 25.0, 1.0)
    assert (SIESettings().equi_factor, VICRegTrajSettings().traj_alpha) == (1.0, 1.0)
    widths = {name: CATALOG[name].settings().projector_dims for name in CATALOG if name != DEFAULT_METHOD}
    assert widths == {"simclr": [2048] * 3, "byol": [2048, 128], "cond_byol": [2048, 128], "vicreg": [2048] * 3,
                      "vicreg_traj": [2048] * 3, "sen": [2048] * 3, "equimod": [1024, 1024, 128], "sie": [1024] * 3}
    for name, entry in CATALOG.items():
        entry.settings().check(name)


@pytest.mark.parametrize("method, field, value, message", [
    ("simclr", "temperature", 0, "simclr.temperature must be > 0, got 0"),
    ("vicreg", "var_coeff", -1.0, "vicreg.var_coeff must be >= 0, got -1.0"),
    ("vicreg_traj", "traj_alpha", float("nan"), "vicreg_traj.traj_alpha must be >= 0, got nan"),
    ("sie", "projector_dims", [], "sie.projector_dims must be a non-empty list of widths >= 1, got []"),
    ("byol", "projector_dims", [2048, 0], "byol.projector_dims must be a non-empty list of widths >= 1"),
    ("seq_jepa", "dropout", 1.0, "seq_jepa.dropout must be in [0, 1), got 1.0"),
])
def test_settings_check_names_the_bad_key(method, field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        method_entry(method).settings(**{field: value}).check(method)
    if value == value:  # not NaN, which an override cannot give (a non-finite float is refused as such)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [f"model.method={method}", f"{method}.{field}={value}"])


def test_projector_dims_set_every_projector_width():
    settings = method_entry("equimod").settings(projector_dims=[48, 24])
    model = build_method("equimod", build_encoder("convnet", 1, width=4), 4, settings)
    assert [m.out_features for m in model.projector_inv if isinstance(m, torch.nn.Linear)] == [48, 24]
    assert [m.out_features for m in model.projector_equi if isinstance(m, torch.nn.Linear)] == [48, 24]


def test_the_config_schema_and_the_catalogue_import_without_torch():
    """A bad config is reported before anything heavy is imported."""
    code = ("import sys; from trainer.config import load_config; from trainer.methods.catalog import CATALOG; "
            "[e.settings().check(n) for n, e in CATALOG.items()]; load_config(None, ['model.method=simclr']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


def test_an_unknown_model_method_is_one_config_error_listing_the_valid_ones():
    valid = "byol, cond_byol, equimod, sen, seq_jepa, sie, simclr, vicreg, vicreg_traj"
    with pytest.raises(ConfigError, match=rf"unknown method 'simsiam' \(model.method\); valid: {valid}$"):
        load_config(None, ["model.method=simsiam"])


def test_three_view_methods_need_two_observed_views_before_anything_starts():
    with pytest.raises(ConfigError, match="model.method=vicreg_traj trains on three consecutive views"):
        load_config(None, ["model.method=vicreg_traj", "model.seq_len=1"])
    assert load_config(None, ["model.method=vicreg_traj", "model.seq_len=2"]).model.method == "vicreg_traj"


def test_the_catalogue_knows_which_methods_need_three_views():
    assert {name for name, entry in CATALOG.items() if entry.views == 3} == {"vicreg_traj"}
