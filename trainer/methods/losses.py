"""The baselines' loss terms as pure functions of float32 embeddings (docs/paper-and-original-code.md#baselines).

Cross-sample terms (NT-Xent negatives, variance, covariance) are only right on the global batch: the
methods call these after `gather_rows`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over the 2N rows of [a; b]: row i's positive is its pair, the other 2N-2 rows are its negatives;
    cosine similarities / temperature, cross-entropy averaged over all 2N rows (SimCLR)."""
    n = a.shape[0]
    features = F.normalize(torch.cat([a, b]), dim=1)
    logits = features @ features.T / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    positives = torch.arange(2 * n, device=logits.device).roll(n)  # row i pairs with row i + n (mod 2n)
    return F.cross_entropy(logits, positives)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(prediction, target), averaged over the batch: 0 aligned, 2 orthogonal, 4 opposite."""
    return 2 - 2 * F.cosine_similarity(prediction, target, dim=1).mean()


def variance_term(y: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean over dimensions of ReLU(1 - std), std = sqrt(unbiased batch variance + eps) (VICReg)."""
    return F.relu(1 - torch.sqrt(y.var(dim=0) + eps)).mean()


def covariance_term(y: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal entries of the (unbiased) batch covariance, divided by the width (VICReg)."""
    n, width = y.shape
    centered = y - y.mean(dim=0)
    cov = centered.T @ centered / (n - 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / width


def vicreg_terms(y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(invariance, variance, covariance) of two branches as in the paper's VICReg: MSE; the two branches'
    variance terms averaged; their covariance terms summed."""
    invariance = F.mse_loss(y1, y2)
    variance = (variance_term(y1) + variance_term(y2)) / 2
    covariance = covariance_term(y1) + covariance_term(y2)
    return invariance, variance, covariance


def trajectory_term(y_l: torch.Tensor, y_c: torch.Tensor, y_r: torch.Tensor) -> torch.Tensor:
    """-cos(u1, u2) averaged over the batch, u = v - (v . y_c) y_c for the steps v1 = y_c - y_l, v2 = y_r - y_c
    (VICReg-Traj: consecutive steps should continue in the same direction). As in the paper's code y_c is not
    normalised, so u is the tangent part of v only when |y_c| = 1."""
    v1, v2 = y_c - y_l, y_r - y_c
    u1 = v1 - (v1 * y_c).sum(dim=1, keepdim=True) * y_c
    u2 = v2 - (v2 * y_c).sum(dim=1, keepdim=True) * y_c
    return -F.cosine_similarity(u1, u2, dim=1).mean()
