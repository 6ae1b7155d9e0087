"""The maths of the probes' scores, shared by the online probes and the offline evaluation: R² per action group
(sklearn's uniform average over output dimensions) and the effective rank of a set of features (RankMe)."""

from __future__ import annotations

import torch


def summarise_r2(sse: torch.Tensor, total: torch.Tensor, groups: dict[str, list[int]], name: str) -> dict[str, float]:
    """Per-dimension R² = 1 - SSE_d / SS_tot,d, averaged overall (`name`) and per action group (`name/group`).

    A constant target dimension (a disabled transformation) has no variance to explain and is left out.
    """
    valid = total > 1e-12
    r2 = torch.where(valid, 1 - sse / total.clamp(min=1e-12), torch.zeros_like(total))
    metrics = {name: float(r2[valid].mean()) if valid.any() else 0.0}
    for group, dims in groups.items():
        if valid[dims].any():
            metrics[f"{name}/{group}"] = float(r2[dims][valid[dims]].mean())
    return metrics


def effective_rank(features: torch.Tensor) -> float:
    """RankMe: exp of the entropy of the normalised singular values (a collapse monitor)."""
    s = torch.linalg.svdvals(features.float() - features.float().mean(0))
    p = s / s.sum().clamp(min=1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))
