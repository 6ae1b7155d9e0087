"""Each baseline loss term against a value worked out by hand on a constructed batch."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.methods.losses import byol_loss, covariance_term, nt_xent, trajectory_term, variance_term, vicreg_terms
from trainer.methods.sie import HyperLinearPredictor


def test_nt_xent_of_identical_orthonormal_pairs_has_its_closed_form():
    # Row i: the positive has cosine 1, the 2N-2 negatives cosine 0 -> -log(e^(1/t) / (e^(1/t) + 2N - 2)).
    n, temperature = 3, 0.5
    a = torch.eye(4)[:n]
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * n - 2))
    assert nt_xent(a, a.clone(), temperature).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_uses_cosines_not_raw_dot_products():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 8, generator=g)
    b = a + 0.1 * torch.randn(5, 8, generator=g)
    assert nt_xent(3.0 * a, b, 0.5).item() == pytest.approx(nt_xent(a, b, 0.5).item(), rel=1e-6)


def test_nt_xent_falls_when_pairs_align():
    g = torch.Generator().manual_seed(2)
    a, noise = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    assert nt_xent(a, a + 0.01 * noise, 0.5) < nt_xent(a, noise, 0.5)


@pytest.mark.parametrize("target_of, expected", [(lambda p: 2.5 * p, 0.0),
                                                 (lambda p: torch.stack([-p[:, 1], p[:, 0]], dim=1), 2.0),
                                                 (lambda p: -p, 4.0)])
def test_byol_loss_is_two_minus_twice_the_cosine(target_of, expected):
    prediction = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    assert byol_loss(prediction, target_of(prediction)).item() == pytest.approx(expected, abs=1e-6)


def test_variance_term_hinges_the_unbiased_std_at_one():
    # Column 0: values +-2, unbiased variance 8 (std > 1, no penalty); column 1: +-0.5, variance 0.5.
    y = torch.tensor([[2.0, 0.5], [-2.0, -0.5]])
    expected = (0.0 + (1 - math.sqrt(0.5 + 1e-4))) / 2
    assert variance_term(y).item() == pytest.approx(expected, rel=1e-6)


def test_covariance_term_sums_squared_off_diagonal_covariances_over_the_width():
    correlated = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # covariance [[2, 2], [2, 2]] -> (2^2 + 2^2) / 2
    uncorrelated = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert covariance_term(correlated).item() == pytest.approx(4.0)
    assert covariance_term(uncorrelated).item() == pytest.approx(0.0, abs=1e-7)


def test_vicreg_terms_average_the_variances_and_sum_the_covariances():
    y1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # variances 2 and 2 (no penalty), covariance term 4
    y2 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])  # variances 2 and 0: penalty (0 + 1 - sqrt(1e-4)) / 2; no covariance
    invariance, variance, covariance = vicreg_terms(y1, y2)
    assert invariance.item() == pytest.approx(1.0)  # squared differences 1, 1, 1, 1
    assert variance.item() == pytest.approx((0.0 + (1 - math.sqrt(1e-4)) / 2) / 2, rel=1e-6)
    assert covariance.item() == pytest.approx(4.0 + 0.0)


@pytest.mark.parametrize("y_r, expected", [([1.0, 1.0, 0.0], -1.0),   # the walk continues: u1 = u2
                                           ([3.0, 1.0, 0.0], -1.0),   # same, after removing the y_c component
                                           ([1.0, 0.0, 1.0], 0.0),    # turns by 90 degrees
                                           ([1.0, -1.0, 0.0], 1.0)])  # turns back
def test_trajectory_term_is_minus_the_cosine_of_the_tangent_steps(y_r, expected):
    y_l, y_c = torch.tensor([[1.0, -1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])  # v1 = (0, 1, 0)
    assert trajectory_term(y_l, y_c, torch.tensor([y_r])).item() == pytest.approx(expected, abs=1e-6)


def test_sie_predictor_applies_the_matrix_its_hypernetwork_outputs():
    torch.manual_seed(0)
    predictor = HyperLinearPredictor(action_dim=3, width=5)
    y, action = torch.randn(4, 5), torch.randn(4, 3)
    matrices = predictor.hypernet(action).view(4, 5, 5)  # W(a) as (out, in), per sample
    expected = torch.bmm(matrices, y.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(predictor(y, action), expected)
