"""The `method:` section of the run config: hyper-parameters of the baseline methods (spec §5, Appendix A).

Torch-free on purpose: the config schema imports it to validate a run before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trainer.errors import ConfigError

# Every valid `model.method`; seq_jepa is built by trainer.model.SeqJEPA, the others by trainer.methods.
METHOD_NAMES = ("byol", "cond_byol", "equimod", "sen", "seq_jepa", "sie", "simclr", "vicreg", "vicreg_traj")


@dataclass
class MethodConfig:
    temperature: float = 0.5  # NT-Xent temperature (simclr, sen, equimod; --temp)
    inv_coeff: float = 25.0  # weight of the invariance MSE (vicreg, vicreg_traj, sie; --inv-coeff)
    var_coeff: float = 25.0  # weight of the variance hinge (vicreg, vicreg_traj, sie; --var-coeff)
    cov_coeff: float = 1.0  # weight of the covariance penalty (vicreg, vicreg_traj, sie; --cov-coeff)
    equi_factor: float = 1.0  # equivariant term weight: equimod's NT-Xent, sie's MSE (x inv_coeff) (--equi-factor)
    traj_alpha: float = 1.0  # weight of vicreg_traj's trajectory term (--alpha; an old script used 0.01)
    # Projector hidden + output widths, e.g. [2048, 2048, 2048]; applies to every projector of the method
    # (byol/cond_byol predictors: output -> first width -> output). None: the method's paper default.
    projector_dims: Optional[list[int]] = None

    def check(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        for key in ("inv_coeff", "var_coeff", "cov_coeff", "equi_factor", "traj_alpha"):
            value = getattr(self, key)
            if not value >= 0:
                raise ConfigError(f"method.{key} must be >= 0, got {value}")
        dims = self.projector_dims
        if dims is not None and (len(dims) == 0 or any(not isinstance(d, int) or d < 1 for d in dims)):
            raise ConfigError(f"method.projector_dims must be null or a non-empty list of widths >= 1, got {dims}")
