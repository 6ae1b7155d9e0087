"""The MLflow metric names that readers rely on: the sweep reports (sweeps/), the README, the tests.

Three namespaces, one per moment a metric is measured, so MLflow's chart view groups them:

* `train/...`: per logging window, over the window's steps and all ranks (`train/loss/<term>`: the loss's
  terms as the method reports them, e.g. VICReg's invariance, variance and covariance).
* `val/...`: at the end of an epoch, on the validation split: the online probes' invariance (`val/inv/...`,
  classification top-1 %) and equivariance (`val/equi/...`, R² of the relative action), the loss, the
  effective rank of the features.
* `eval/...`: the offline evaluation of a checkpoint (`python -m trainer.evaluate`), probes on the frozen model.

An R² key is followed by its per-action-group values (`val/equi/r2_enc/rotation`). A metric is named where it is
computed; a reader takes the name from here. Torch-free.
"""

from __future__ import annotations

import re

# Training, per logging window.
TRAIN_LOSS = "train/loss"
LOSS_TERM_PREFIX = "train/loss/"  # + a term of the method's loss (`MethodOutput.logs`)
GRAD_NORM = "train/grad_norm"  # global L2 norm of the gradient before clipping
SAMPLES_PER_S = "train/samples_per_s"
DATA_WAIT_FRAC = "train/data_wait_frac"
MFU = "train/mfu"

# Online probes on the validation split, each evaluated epoch.
VAL_LOSS = "val/loss"
VAL_ACC_AGG = "val/inv/acc_agg"  # linear probe on z_AGG (methods with an aggregate)
VAL_ACC_ENC = "val/inv/acc_enc"  # linear probe on one encoder output
VAL_R2 = {"enc": "val/equi/r2_enc", "agg": "val/equi/r2_agg"}  # relative action from the encoder pair / z_AGGs
VAL_R2_ENC, VAL_R2_AGG = VAL_R2["enc"], VAL_R2["agg"]
VAL_EFF_RANK = {"enc": "val/eff_rank_enc", "agg": "val/eff_rank_agg"}  # RankMe of the features

# Offline evaluation of a checkpoint.
EVAL_ACC_ENC = "eval/inv/acc_enc"
EVAL_R2_ENC = "eval/equi/r2_enc"
EVAL_R2_AGG = "eval/equi/r2_agg"  # leakage: the single-view aggregates should forget the transformation
EVAL_R2_ABS_ROTATION = "eval/equi/r2_abs/rotation"  # a view's absolute rotation from its encoder output
EVAL_EFF_RANK_ENC = "eval/eff_rank_enc"
EVAL_ACC_AGG_M = re.compile(r"^eval/inv/acc_agg/M(\d+)$")


def eval_acc_agg(m_val: int) -> str:
    """Linear probe on z_AGG of the first `m_val` views (MLflow rejects '@', hence M{k})."""
    return f"eval/inv/acc_agg/M{m_val}"


def eval_path_r2(m_val: int, no_vision: bool = False) -> str:
    """Path integration from z_AGG over `m_val` views (or its no-vision control)."""
    return f"eval/path/{'r2_no_vision' if no_vision else 'r2'}/M{m_val}"


def per_group(key: str, group: str) -> str:
    """An R² metric's value for one action group: `val/equi/r2_enc` + `rotation`."""
    return f"{key}/{group}"


# Names the online metrics had in runs logged before version 0.2 (a report reads old runs too).
PREVIOUS_NAMES = {VAL_ACC_AGG: "inv/acc_agg", VAL_ACC_ENC: "inv/acc_enc", VAL_R2_ENC: "equi/r2_enc",
                  VAL_R2_AGG: "equi/r2_agg", VAL_EFF_RANK["enc"]: "train/eff_rank_enc",
                  VAL_EFF_RANK["agg"]: "train/eff_rank_agg"}


def previous_name(key: str) -> str | None:
    """The name `key` (or its per-group form) had before version 0.2, if it had another."""
    for new, old in PREVIOUS_NAMES.items():
        if key == new or key.startswith(new + "/"):
            return old + key[len(new):]
    return None


def current_name(old_key: str) -> str | None:
    """The name a metric logged before version 0.2 as `old_key` (or its per-group form) has now, if another."""
    for new, old in PREVIOUS_NAMES.items():
        if old_key == old or old_key.startswith(old + "/"):
            return new + old_key[len(old):]
    return None
