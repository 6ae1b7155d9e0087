"""Every training method in one table: what the config, the model builder and the reports need to know of it.

Torch-free, so that a config is checked and a report is drawn without importing torch. One `MethodEntry` per
method (`CATALOG`, at the bottom): its name (the value of `model.method` and the name of its config section),
the module and class that implement it (imported only when a model is built), the views it trains on, its
family in the paper's Table 1, whether it has an aggregate z_AGG, whether it keeps an EMA target, and the
dataclass of its config section: the settings only that method reads. Settings that several methods read
(the encoder, the sequence length, the action embedding width) stay in `model.*`.

Adding a method: its module under trainer/methods/ (a `Method` subclass) and one entry here, with a settings
dataclass if it has settings of its own (README, "Extending").
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Literal

from trainer.errors import ConfigError

DEFAULT_METHOD = "seq_jepa"  # model.method when none is given: the method this project is about

# Families of Table 1: how the reports colour and group a method.
SEQ_JEPA_FAMILY = "seq-JEPA"  # a sequence model with an aggregate z_AGG, read at several inference lengths
INVARIANT = "invariant"  # pulls the views of one object together; actions unused
EQUIVARIANT = "equivariant"  # keeps the transformation in the representation, from the actions or the trajectory
FAMILIES = (SEQ_JEPA_FAMILY, INVARIANT, EQUIVARIANT)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_widths(section: str, dims: list[int]) -> None:
    _require(len(dims) > 0 and all(isinstance(d, int) and d >= 1 for d in dims),
             f"{section}.projector_dims must be a non-empty list of widths >= 1, got {dims}")


def _check_non_negative(section: str, settings, *keys: str) -> None:
    for key in keys:
        value = getattr(settings, key)
        _require(value >= 0, f"{section}.{key} must be >= 0, got {value}")


def _check_temperature(section: str, temperature: float) -> None:
    _require(temperature > 0, f"{section}.temperature must be > 0, got {temperature}")


# ---------------------------------------------------------------------------------------------------------------
# Each method's own settings: its config section (`seq_jepa.*`, `simclr.*`, ...). Defaults are the paper's
# (Appendix A and the authors' scripts; docs/paper-and-original-code.md#baselines).


@dataclass
class SeqJEPASettings:
    action_cond: bool = True  # condition tokens and predictor on actions (off: the no-action model of Table 1)
    learn_action_embedding: bool = True  # learned Linear->BN action embedding; off: raw actions, zero-padded
    num_heads: int = 4  # aggregator attention heads
    num_layers: int = 3  # aggregator transformer layers
    mlp_ratio: float = 4.0  # aggregator feed-forward width / token width
    dropout: float = 0.1  # aggregator dropout (PyTorch default, as in the paper's code)
    pred_hidden: int = 1024  # predictor hidden width (<= 0: a single linear layer)
    # The authors' augmentation/PLS code path (cifar100, tinyimagenet, stl10; README "differences"):
    legacy_action_bn_zeros: bool = False  # the last token's action zeroed BEFORE the action BN, so B zero rows
    # enter its batch statistics; false: only real actions, as their 3DIEBench path
    legacy_absolute_raw_actions: bool = False  # with learn_action_embedding=false: tokens carry the views' absolute
    # latents, none zeroed, the predictor the target's; false: relative actions, as everywhere else

    def check(self, section: str) -> None:
        _require(self.num_heads >= 1 and self.num_layers >= 1,
                 f"{section}.num_heads and {section}.num_layers must be >= 1")
        _require(0.0 <= self.dropout < 1.0, f"{section}.dropout must be in [0, 1), got {self.dropout}")
        _require(not self.legacy_absolute_raw_actions or (self.action_cond and not self.learn_action_embedding),
                 f"{section}.legacy_absolute_raw_actions=true is the authors' raw-action variant: it needs "
                 f"{section}.learn_action_embedding=false and {section}.action_cond=true")


@dataclass
class SimCLRSettings:
    temperature: float = 0.5  # NT-Xent temperature (--temp)
    projector_dims: list[int] = field(default_factory=lambda: [2048, 2048, 2048])  # hidden + output widths

    def check(self, section: str) -> None:
        _check_temperature(section, self.temperature)
        _check_widths(section, self.projector_dims)


@dataclass
class BYOLSettings:
    # Projector hidden + output widths; the predictor is output -> first width -> output.
    projector_dims: list[int] = field(default_factory=lambda: [2048, 128])

    def check(self, section: str) -> None:
        _check_widths(section, self.projector_dims)


@dataclass
class VICRegSettings:
    inv_coeff: float = 25.0  # weight of the invariance MSE (--inv-coeff)
    var_coeff: float = 25.0  # weight of the variance hinge (--var-coeff)
    cov_coeff: float = 1.0  # weight of the covariance penalty (--cov-coeff)
    projector_dims: list[int] = field(default_factory=lambda: [2048, 2048, 2048])

    def check(self, section: str) -> None:
        _check_non_negative(section, self, "inv_coeff", "var_coeff", "cov_coeff")
        _check_widths(section, self.projector_dims)


@dataclass
class VICRegTrajSettings(VICRegSettings):
    traj_alpha: float = 1.0  # weight of the trajectory term (--alpha; an old script used 0.01)

    def check(self, section: str) -> None:
        super().check(section)
        _check_non_negative(section, self, "traj_alpha")


@dataclass
class SENSettings:
    temperature: float = 0.5
    learn_action_embedding: bool = True  # off: the predictor reads the raw relative action (--learn-act-emb 0)
    projector_dims: list[int] = field(default_factory=lambda: [2048, 2048, 2048])

    def check(self, section: str) -> None:
        _check_temperature(section, self.temperature)
        _check_widths(section, self.projector_dims)


@dataclass
class EquiModSettings:
    temperature: float = 0.5
    learn_action_embedding: bool = True  # off: the predictor reads the raw relative action (--learn-act-emb 0)
    equi_factor: float = 1.0  # weight of the equivariant NT-Xent (--equi-factor)
    projector_dims: list[int] = field(default_factory=lambda: [1024, 1024, 128])

    def check(self, section: str) -> None:
        _check_temperature(section, self.temperature)
        _check_non_negative(section, self, "equi_factor")
        _check_widths(section, self.projector_dims)


@dataclass
class SIESettings(VICRegSettings):
    equi_factor: float = 1.0  # the equivariant MSE's weight, times inv_coeff (--equi-factor)
    projector_dims: list[int] = field(default_factory=lambda: [1024, 1024, 1024])

    def check(self, section: str) -> None:
        super().check(section)
        _check_non_negative(section, self, "equi_factor")


@dataclass
class NoSettings:
    """For a method with no settings of its own."""

    def check(self, section: str) -> None:
        """Nothing to check."""


# ---------------------------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class MethodEntry:
    name: str  # model.method, and the name of its config section
    module: str  # the module that implements it
    cls: str  # its Method subclass there
    family: str  # one of FAMILIES
    label: str  # how tables and figures name it
    settings: type = NoSettings  # the dataclass of its config section
    views: int = 2  # consecutive views per sequence it trains on (the loader gives model.seq_len + 1)
    aggregate: bool = False  # it has an aggregate z_AGG (probed at several inference lengths M_val)
    ema: Literal["none", "always", "switchable"] = "none"  # its EMA target: none; always; ema.enabled decides

    def load(self) -> type:
        """The method's class (imports torch)."""
        cls = getattr(importlib.import_module(self.module), self.cls)
        if getattr(cls, "name", None) != self.name:
            raise TypeError(f"{self.module}.{self.cls}.name is {getattr(cls, 'name', None)!r}, its catalogue entry "
                            f"says {self.name!r}")
        return cls

    def setting_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self.settings))


CATALOG: dict[str, MethodEntry] = {}


def register(entry: MethodEntry) -> MethodEntry:
    """Add a method to the catalogue (the entries below; an extension or a test may add its own)."""
    if entry.family not in FAMILIES:
        raise ValueError(f"method {entry.name!r}: family must be one of {', '.join(FAMILIES)}, got {entry.family!r}")
    CATALOG[entry.name] = entry
    return entry


for _entry in (
    MethodEntry("seq_jepa", "trainer.methods.seq_jepa", "SeqJEPA", SEQ_JEPA_FAMILY, "seq-JEPA", SeqJEPASettings,
                aggregate=True, ema="switchable"),
    MethodEntry("simclr", "trainer.methods.simclr", "SimCLR", INVARIANT, "SimCLR", SimCLRSettings),
    MethodEntry("byol", "trainer.methods.byol", "BYOL", INVARIANT, "BYOL", BYOLSettings, ema="always"),
    MethodEntry("vicreg", "trainer.methods.vicreg", "VICReg", INVARIANT, "VICReg", VICRegSettings),
    MethodEntry("vicreg_traj", "trainer.methods.vicreg_traj", "VICRegTraj", EQUIVARIANT, "VICReg-Traj",
                VICRegTrajSettings, views=3),
    MethodEntry("sen", "trainer.methods.sen", "SEN", EQUIVARIANT, "SEN", SENSettings),
    MethodEntry("equimod", "trainer.methods.equimod", "EquiMod", EQUIVARIANT, "EquiMod", EquiModSettings),
    MethodEntry("sie", "trainer.methods.sie", "SIE", EQUIVARIANT, "SIE", SIESettings),
    MethodEntry("cond_byol", "trainer.methods.cond_byol", "ConditionalBYOL", EQUIVARIANT, "cond. BYOL", BYOLSettings,
                ema="always"),
):
    register(_entry)


def method_names() -> tuple[str, ...]:
    return tuple(CATALOG)


def method_entry(name: str) -> MethodEntry:
    """The entry of `model.method`; an unknown name is one line listing the valid ones."""
    if name not in CATALOG:
        raise ConfigError(f"unknown method '{name}' (model.method); valid: {', '.join(sorted(CATALOG))}")
    return CATALOG[name]


def methods_with_ema(*kinds: str) -> tuple[str, ...]:
    """The methods whose EMA target is of one of `kinds` ("always", "switchable"): who reads `ema.*`."""
    return tuple(name for name, entry in CATALOG.items() if entry.ema in kinds)
