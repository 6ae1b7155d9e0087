"""Online probes: how invariant z_AGG is and how equivariant the encoder is, measured while training.

Probes read detached features, have their own optimizer, and never send gradients into the model.

* invariance (classification, linear): `val/inv/acc_agg` on z_AGG, `val/inv/acc_enc` on one encoder output.
* equivariance (regression of the relative action view 1 -> view 2, R²):
  `val/equi/r2_enc` from the encoder pair (z1, z2) and `val/equi/r2_agg` from the pair of single-view z_AGGs
  (leakage check: the aggregate should forget the transformation). The relative rotation is bilinear in
  the two views' pose codes, so these are MLPs as in the paper's online probe
  (docs/paper-and-original-code.md#online-probes).

The `*_agg` probes exist only for a method with an aggregate (seq-JEPA); every method has the encoder ones.
Validation metrics are reduced as sufficient statistics (sums), so they cover the whole split across
ranks exactly without gathering predictions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.metric_names import VAL_ACC_AGG, VAL_ACC_ENC, VAL_LOSS, VAL_R2
from trainer.stats import summarise_r2
from trainer.training.sums import NamedSums, all_reduce_named


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class OnlineProbes(nn.Module):
    """Linear classifiers and MLP regressors on detached features; those on z_AGG only where the method has one."""

    def __init__(self, enc_dim: int, agg_dim: int | None, action_dim: int, num_classes: int, hidden: int):
        super().__init__()
        self.kinds = ("enc",) if agg_dim is None else ("enc", "agg")  # what the features hold: encoder, aggregate
        if agg_dim is not None:  # (the order of construction is the order of the random initial weights)
            self.cls_agg = nn.Linear(agg_dim, num_classes)
        self.cls_enc = nn.Linear(enc_dim, num_classes)
        self.equi_enc = _mlp(2 * enc_dim, hidden, action_dim)
        if agg_dim is not None:
            self.equi_agg = _mlp(2 * agg_dim, hidden, action_dim)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pred = {"logits_enc": self.cls_enc(features["z1"]), "action_enc": self.equi_enc(features["pair_enc"])}
        if "agg" in self.kinds:
            pred.update(logits_agg=self.cls_agg(features["z_agg"]), action_agg=self.equi_agg(features["pair_agg"]))
        return pred


def probe_features(out) -> dict[str, torch.Tensor]:
    """Detached float32 probe inputs from a method's output (a `MethodOutput`)."""
    features = {"z1": out.z1.detach().float(), "pair_enc": torch.cat([out.z1, out.z2], dim=-1).detach().float()}
    if out.z_agg is not None:
        features.update(z_agg=out.z_agg.detach().float(), pair_agg=out.z_agg_single.flatten(1).detach().float())
    return features


def probe_loss(pred: dict[str, torch.Tensor], label: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Classifiers learn from labelled samples only (label -1: e.g. STL-10's unlabeled split), regressors from all.

    A sum over labelled rows divided by their count (at least 1): no NaN for a batch without labels,
    and no host sync to find out.
    """
    labelled = (label >= 0).sum().clamp(min=1)
    classification = sum(F.cross_entropy(pred[key], label, ignore_index=-1, reduction="sum")
                         for key in ("logits_agg", "logits_enc") if key in pred) / labelled
    loss = classification + F.mse_loss(pred["action_enc"], action)
    return loss + F.mse_loss(pred["action_agg"], action) if "action_agg" in pred else loss


class ProbeMetrics:
    """Accumulates accuracy counts and per-dimension R² sums by name (`NamedSums`); `compute` all-reduces them
    across ranks in one collective.

    R² per output dimension d: 1 - SSE_d / (Σy_d² - (Σy_d)²/n), averaged over dimensions, as
    sklearn's r2_score with multioutput="uniform_average" (docs/paper-and-original-code.md#r-squared).
    """

    def __init__(self, action_groups: dict[str, list[int]], device: torch.device,
                 kinds: tuple[str, ...] = ("enc", "agg")):
        self.groups, self.kinds = action_groups, kinds
        self.sums = NamedSums(device)

    def update(self, pred: dict, label: torch.Tensor, action: torch.Tensor, loss: torch.Tensor,
               weight: float = 1.0) -> None:
        """`weight=0` lets a rank that ran out of validation batches join the collectives harmlessly."""
        if weight == 0.0:
            return
        n = label.numel()  # (sums stay on the device: no batch waits for them)
        self.sums.add("n", n)
        self.sums.add("loss_sum", loss.double() * n)
        y = action.double()
        for key in self.kinds:
            self.sums.add(f"correct/{key}", (pred[f"logits_{key}"].argmax(-1) == label).sum())
            err = pred[f"action_{key}"].double() - y
            self.sums.add(f"sum_y/{key}", y.sum(0))
            self.sums.add(f"sum_y2/{key}", (y * y).sum(0))
            self.sums.add(f"sse/{key}", (err * err).sum(0))

    def compute(self) -> dict[str, float]:
        totals = {k: torch.tensor(v, dtype=torch.float64)
                  for k, v in all_reduce_named(self.sums.values, self.sums.device).items()}
        n = totals["n"].clamp(min=1)
        metrics = {VAL_LOSS: float(totals["loss_sum"] / n)}
        accuracy = {"enc": VAL_ACC_ENC, "agg": VAL_ACC_AGG}
        for key in self.kinds:
            metrics[accuracy[key]] = float(100 * totals[f"correct/{key}"] / n)
            sum_y, sum_y2 = totals[f"sum_y/{key}"], totals[f"sum_y2/{key}"]
            metrics.update(summarise_r2(totals[f"sse/{key}"], sum_y2 - sum_y * sum_y / n, self.groups, VAL_R2[key]))
        return metrics
